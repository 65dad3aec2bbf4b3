"""The worker's HTTP server: `/metrics` (Prometheus), `/healthz` (liveness), `/readyz` (readiness).

Served by uvicorn (Starlette) inside the worker process when VIDANIM_HTTP_PORT is
set. `/healthz` answers 200 while the process serves at all. `/readyz` answers 200
when the database answers and at least one configured provider's breaker is not
open, else 503 with the reasons: a load balancer or an orchestrator stops sending
work to a worker that could only make jobs wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vidanim.worker.db import ServiceDatabase
from vidanim.worker.metrics import WorkerMetrics

READY_TIMEOUT_SECONDS = 2.0


def build_app(db: ServiceDatabase, metrics: WorkerMetrics) -> Starlette:
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

    return Starlette(
        routes=[Route("/metrics", scrape), Route("/healthz", healthz), Route("/readyz", readyz)],
    )


class HttpServer:
    """uvicorn on a socket of its own, as a task of the worker's event loop."""

    def __init__(self, app: Starlette, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        bound_host, bound_port = self.sock.getsockname()[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                await self._task  # raises what stopped it
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()
