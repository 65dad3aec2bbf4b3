"""The worker's two HTTP listeners, each uvicorn (Starlette) on a socket of its own.

The public listener (VIDANIM_HTTP_HOST/PORT) serves only `POST /webhooks/fal/{job_id}`
(fal's signed deliveries, when webhooks are on): it is the one fal must reach from the
internet. The operator listener (VIDANIM_OPERATOR_HOST/PORT, 127.0.0.1 by default)
serves `/metrics` (Prometheus), `/healthz` (liveness) and `/readyz` (readiness): spend,
cap and breaker reasons, and queries on the worker's pool at each scrape, are nobody
else's business. Each is off unless its port is set.

A webhook delivery is verified (401: a URL vidanim did not issue, unsigned,
badly signed or stale; 400: not fal's shape; 413: larger than any result), recorded in the database in one call, and
answered 200 with its outcome only after that commit; a database error answers 503
so fal delivers again. The job's worker, in this process or another, is woken by
the record (NOTIFY vidanim_deliveries) and does the rest under its lease.

`/healthz` answers 200 while the process serves at all. `/readyz` answers 200
when the database answers and at least one configured provider's breaker is not
open, else 503 with the reasons: a load balancer or an orchestrator stops sending
work to a worker that could only make jobs wait.

Every listener holds a connection only as long as a client that means well needs
(`GuardedProtocol`): whole request headers within `header_timeout`, the whole body
within `body_timeout` after them, and no more than `max_connections` at once (the
excess is answered 503 at once and closed, unread). uvicorn's own `limit_concurrency`
is checked only once a request's headers are complete, so it cannot stop a client
that never completes them (a slow-loris); the subclass can. What it sheds is
logged as one summary line at most every SHED_LOG_SECONDS, never per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidanim.logs import log_event
from vidanim.webhooks.fal import (
    MAX_BODY_BYTES,
    FalWebhookVerifier,
    ForeignAccount,
    WebhookRefused,
    token_hash,
    token_well_formed,
)
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.listener import BoundedLogs, GuardedProtocol, ListenerLimits
from vidanim.worker.log_limit import LogLimit
from vidanim.worker.metrics import WorkerMetrics

log = logging.getLogger("vidanim.worker")

READY_TIMEOUT_SECONDS = 2.0


@dataclass
class FalWebhooks:
    """What the webhook route needs besides the database."""

    verifier: FalWebhookVerifier
    #: a delivery was recorded for a running job: wake it, if this process runs it
    on_recorded: Callable[[uuid.UUID], None]
    #: a delivery named a request no job holds: cancel it at fal
    on_orphan: Callable[[str, uuid.UUID], Coroutine[Any, Any, None]]
    #: refusals are logged at most once a minute per reason (the metrics count each)
    log_limit: LogLimit = field(default_factory=LogLimit)


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The client went away (or was cut off for trickling) before the whole body arrived."""


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (the signature covers these bytes), refused past `limit` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
    except ClientDisconnect:
        raise BodyIncomplete from None
    return bytes(body)


BAD_TOKEN = "not a URL vidanim issued: the token is missing, wrong for this job or expired"  # noqa: S105 (a message)
TOKEN_REUSED = "not a URL vidanim issued for this request: its token reported another one"  # noqa: S105 (a message)


def webhook_route(db: ServiceDatabase, metrics: WorkerMetrics, hooks: FalWebhooks) -> Route:
    background: set[asyncio.Task[None]] = set()

    def refused(job_id: uuid.UUID, exc: WebhookRefused, started: float) -> Response:
        metrics.observe_webhook("fal", f"refused_{exc.status}", time.perf_counter() - started)
        metrics.observe_refusal("fal", exc.code)
        quiet = hooks.log_limit.allow(exc.code)
        if quiet is not None:
            extra = {"seen_user_id": exc.user_id} if isinstance(exc, ForeignAccount) else {}
            log_event(
                log,
                "webhook.refused",
                logging.WARNING,
                provider="fal",
                job_id=str(job_id),
                status=exc.status,
                reason=exc.reason,
                code=exc.code,
                suppressed=quiet,
                **extra,
            )
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    def unrecorded(job_id: uuid.UUID, exc: Exception, started: float) -> Response:
        metrics.observe_webhook("fal", "error", time.perf_counter() - started)
        log_event(
            log,
            "webhook.unrecorded",
            logging.ERROR,
            provider="fal",
            job_id=str(job_id),
            error=f"{type(exc).__name__}: {exc}",
        )
        return JSONResponse({"error": "not recorded; deliver again"}, status_code=503)

    async def fal_webhook(request: Request) -> Response:
        started = time.perf_counter()
        try:
            job_id = uuid.UUID(request.path_params["job_id"])
        except ValueError:
            return JSONResponse({"error": "no such job"}, status_code=404)
        token = request.query_params.get("token")
        try:
            # one primary-key lookup, before a byte of the body is read
            known = token_well_formed(token) and await db.webhook_token_valid(job_id, token_hash(token or ""))
        except Exception as exc:  # the database is away: fal must deliver again
            return unrecorded(job_id, exc, started)
        try:
            if not known:
                raise WebhookRefused(401, BAD_TOKEN, "bad_token")
            body = await read_body(request, MAX_BODY_BYTES)
            delivery = await hooks.verifier.verify(request.headers, body)
        except BodyTooLarge:
            return refused(job_id, WebhookRefused(413, "the body is larger than a result", "too_large"), started)
        except BodyIncomplete:  # nobody to answer; the listener counts it, without a line per connection
            metrics.observe_webhook("fal", "refused_408", time.perf_counter() - started)
            return JSONResponse({"error": "the body did not arrive in time"}, status_code=408)
        except WebhookRefused as exc:
            return refused(job_id, exc, started)
        try:
            outcome = await db.record_tokened_delivery(
                job_id, "fal", delivery.request_id, delivery.status, delivery.body, token_hash(token or "")
            )
        except Exception as exc:  # not recorded: fal must deliver again
            return unrecorded(job_id, exc, started)
        if outcome == "refused_token":
            return refused(job_id, WebhookRefused(401, TOKEN_REUSED, "token_reused"), started)
        if outcome == "recorded":
            hooks.on_recorded(job_id)
        elif outcome == "orphan":
            task = asyncio.create_task(hooks.on_orphan(delivery.request_id, job_id))
            background.add(task)
            task.add_done_callback(background.discard)
        level = logging.WARNING if outcome in ("orphan", "unknown_job") else logging.INFO
        log_event(
            log,
            "webhook.received",
            level,
            provider="fal",
            job_id=str(job_id),
            task_id=delivery.request_id,
            status=delivery.status,
            outcome=outcome,
        )
        metrics.observe_webhook("fal", outcome, time.perf_counter() - started)
        return JSONResponse({"outcome": outcome})

    return Route("/webhooks/fal/{job_id}", fal_webhook, methods=["POST"])


def build_public_app(db: ServiceDatabase, metrics: WorkerMetrics, hooks: FalWebhooks | None = None) -> Starlette:
    """What the internet may reach: fal's webhook route and nothing else (404 for every other path)."""
    return Starlette(routes=[webhook_route(db, metrics, hooks)] if hooks is not None else [])


def build_operator_app(db: ServiceDatabase, metrics: WorkerMetrics) -> Starlette:
    """What only the operator's scraper and orchestrator may reach: metrics and health."""

    async def scrape(request: Request) -> Response:
        await metrics.refresh(db)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                breakers = await db.breakers()
        except Exception as exc:  # any failure to answer is "not ready", with its reason
            return JSONResponse({"ready": False, "problems": [f"database: {type(exc).__name__}"]}, status_code=503)
        usable = [p for p in metrics.providers if p not in breakers or breakers[p].state != "open"]
        if not usable:
            down = ", ".join(f"{p} ({breakers[p].kind})" for p in metrics.providers)
            problems.append(f"no provider is healthy: {down}")
        body: dict[str, Any] = {"ready": not problems, "providers": usable, "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    return Starlette(routes=[Route("/metrics", scrape), Route("/healthz", healthz), Route("/readyz", readyz)])


class ListenError(RuntimeError):
    """A listener could not bind its address (in use, not ours, not permitted): one line, which one."""

    def __init__(self, name: str, host: str, port: int, reason: str):
        super().__init__(f"the {name} listener cannot bind {host}:{port}: {reason}")
        self.name = name


def listening_socket(host: str, port: int, name: str) -> socket.socket:
    """A TCP socket bound to host:port (ListenError when it cannot be)."""
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say
    # TCP, and without it each answer's body waits for the client's delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(name, host, port, (exc.strerror or str(exc)).lower()) from None
    return sock


class HttpServer:
    """uvicorn on a socket of its own, as a task of the worker's event loop, every connection guarded."""

    def __init__(
        self, app: Starlette, host: str, port: int, limits: ListenerLimits | None = None, *, name: str = "http"
    ):
        self.limits = limits or ListenerLimits()
        self.name = name
        self.sock = listening_socket(host, port, name)
        bound_host, bound_port = self.sock.getsockname()[:2]
        #: host:port as bound (port 0 resolved to the one the system chose)
        self.address = f"{bound_host}:{bound_port}"
        self.url = f"http://{self.address}"
        BoundedLogs.install()
        protocol = GuardedProtocol.bound(self.limits, name=name, url=self.url)
        config = uvicorn.Config(
            app,
            http=protocol,
            log_level="warning",
            # Not uvicorn's dictConfig: it would replace the handlers of its loggers with its own
            # (and tracebacks on stderr); BoundedLogs keeps what they say to a few lines.
            log_config=None,
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            timeout_keep_alive=self.limits.keep_alive_seconds,
            backlog=self.limits.backlog,
        )
        self.server = uvicorn.Server(config)
        self.shed = protocol.shed
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                await self._task  # raises what stopped it
            await asyncio.sleep(0.01)
        log_event(log, "http.listening", listener=self.name, address=self.address, url=self.url)
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()


__all__ = [
    "FalWebhooks",
    "HttpServer",
    "ListenError",
    "ListenerLimits",
    "build_operator_app",
    "build_public_app",
    "listening_socket",
]
