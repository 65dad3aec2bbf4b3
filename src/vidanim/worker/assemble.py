"""Build a worker from settings: the one place that knows every layer."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from psycopg_pool import AsyncConnectionPool

from vidanim.logs import log_event
from vidanim.providers.base import Provider
from vidanim.providers.fal import FalProvider
from vidanim.providers.runway import RunwayProvider
from vidanim.settings import Settings
from vidanim.storage.base import Storage
from vidanim.storage.catalog import ObjectCatalog
from vidanim.storage.local import LocalStorage
from vidanim.storage.supabase import SupabaseStorage
from vidanim.supabase_keys import WrongKey, require_service_key
from vidanim.webhooks.fal import FalWebhookVerifier, JwksKeys
from vidanim.worker.db import ServiceDatabase, open_pool
from vidanim.worker.http import FalWebhooks, HttpServer, ListenerLimits, build_operator_app, build_public_app
from vidanim.worker.metrics import WorkerMetrics
from vidanim.worker.pipeline import JobPipeline
from vidanim.worker.rlimits import raise_open_files_limit
from vidanim.worker.runner import Worker
from vidanim.worker.transfer import tune_http_reads

# The operator listener's cap: a scraper, an orchestrator's probes and an operator's curl.
OPERATOR_MAX_CONNECTIONS = 32


def public_limits(settings: Settings) -> ListenerLimits:
    return ListenerLimits(
        header_timeout_seconds=settings.http_header_timeout_seconds,
        body_timeout_seconds=settings.http_body_timeout_seconds,
        max_connections=settings.http_max_connections,
    )


def operator_limits(settings: Settings) -> ListenerLimits:
    return ListenerLimits(
        header_timeout_seconds=settings.http_header_timeout_seconds,
        body_timeout_seconds=settings.http_body_timeout_seconds,
        max_connections=OPERATOR_MAX_CONNECTIONS,
    )


log = logging.getLogger("vidanim.worker")


class ConfigurationError(Exception):
    """The settings cannot make a working worker; the message says what to set."""


def build_providers(settings: Settings) -> dict[str, Provider]:
    timeout = httpx.Timeout(settings.provider_timeout_seconds, connect=10.0)
    providers: dict[str, Provider] = {}
    for name in settings.provider_order():
        if name == "fal" and settings.fal_key is not None:
            providers["fal"] = FalProvider(
                key=settings.fal_key.get_secret_value(),
                model=settings.fal_model,
                base_url=settings.fal_queue_url,
                poll_interval=settings.fal_poll_seconds,
                timeout=timeout,
                max_connections=settings.provider_max_connections,
            )
        if name == "runway" and settings.runway_api_secret is not None:
            providers["runway"] = RunwayProvider(
                api_secret=settings.runway_api_secret.get_secret_value(),
                model=settings.runway_model,
                base_url=settings.runway_base_url,
                poll_interval=settings.runway_poll_seconds,
                enforce_min_interval=settings.runway_enforce_min_poll,
                timeout=timeout,
                max_connections=settings.provider_max_connections,
            )
    if not providers:
        raise ConfigurationError("no provider configured: set VIDANIM_FAL_KEY and/or VIDANIM_RUNWAY_API_SECRET")
    return providers


def check_storage_settings(settings: Settings, *, service_key: bool = True) -> None:
    """Supabase Storage needs its URL and a key, one that acts as the service role unless
    `service_key=False` (ConfigurationError)."""
    if settings.storage_backend != "supabase":
        return
    if not settings.supabase_url or settings.supabase_service_role_key is None:
        raise ConfigurationError(
            "storage_backend=supabase needs VIDANIM_SUPABASE_URL and VIDANIM_SUPABASE_SERVICE_ROLE_KEY"
        )
    if not service_key:
        return
    try:
        require_service_key(settings.supabase_service_role_key.get_secret_value(), "VIDANIM_SUPABASE_SERVICE_ROLE_KEY")
    except WrongKey as exc:
        raise ConfigurationError(str(exc)) from None


def build_storage(
    settings: Settings, pool: AsyncConnectionPool[Any], *, serve: bool = True, service_key: bool = True
) -> Storage:
    """The configured Storage; `serve=False` for a command that signs no URL (local storage then
    starts no server); `service_key=False` takes a key of any kind (cleanup then reports what
    Storage did not delete)."""
    check_storage_settings(settings, service_key=service_key)
    if settings.storage_backend == "supabase":
        assert settings.supabase_url
        assert settings.supabase_service_role_key
        key = settings.supabase_service_role_key.get_secret_value()
        return SupabaseStorage(supabase_url=settings.supabase_url, service_role_key=key, catalog=ObjectCatalog(pool))
    local = LocalStorage(
        root=settings.local_storage_dir,
        pool=pool,
        signing_secret=settings.local_storage_secret.get_secret_value() if settings.local_storage_secret else None,
    )
    if not serve:
        return local
    if settings.local_storage_url:
        # Serve where clients expect signed URLs to point.
        parts = urlsplit(settings.local_storage_url)
        local.serve(parts.hostname or "127.0.0.1", parts.port or 80)
    else:
        local.serve()
    return local


@dataclass
class WorkerApp:
    worker: Worker
    storage: Storage
    providers: dict[str, Provider]
    pool: AsyncConnectionPool[Any]
    metrics: WorkerMetrics
    #: the public listener, where fal's webhooks arrive (None: VIDANIM_HTTP_PORT unset)
    http_url: str | None = None
    #: the operator listener: /metrics, /healthz and /readyz (None: VIDANIM_OPERATOR_PORT unset)
    operator_url: str | None = None


@contextlib.asynccontextmanager
async def assembled(
    settings: Settings,
    *,
    providers: dict[str, Provider] | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[WorkerApp]:
    """A ready worker and everything it holds, closed on exit."""
    if settings.worker_raise_open_files:
        raise_open_files_limit()
    tune_http_reads()
    providers = providers if providers is not None else build_providers(settings)
    pool = open_pool(settings.require_database_url(), size=settings.worker_db_pool_size)
    await pool.open(wait=True, timeout=30)
    own_storage = storage is None
    if settings.webhook_public_url and settings.http_port is None:
        raise ConfigurationError(
            "VIDANIM_WEBHOOK_PUBLIC_URL needs the worker's HTTP server: set VIDANIM_HTTP_PORT"
            " (and route the public URL to it)"
        )
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=10.0),
        follow_redirects=True,
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
    )
    try:
        store = storage if storage is not None else build_storage(settings, pool)
        db = ServiceDatabase(pool)
        metrics = WorkerMetrics(
            [p for p in settings.provider_order() if p in providers], cache_seconds=settings.metrics_cache_seconds
        )
        pipeline = JobPipeline(settings=settings, db=db, storage=store, providers=providers, http=http, metrics=metrics)
        worker = Worker(settings=settings, db=db, pipeline=pipeline)
        hooks = None
        if settings.fal_webhooks and settings.fal_key is not None:
            keys = JwksKeys(settings.jwks_urls(), http)
            if settings.fal_webhook_user_id is None:
                log_event(
                    log,
                    "webhook.account_unset",
                    logging.WARNING,
                    reason="VIDANIM_FAL_WEBHOOK_USER_ID is unset: every fal delivery is refused (jobs are polled);"
                    " the first refusal logs the user id fal signed (docs/worker.md)",
                )
            hooks = FalWebhooks(
                FalWebhookVerifier(keys, expected_user_id=settings.fal_webhook_user_id),
                worker.delivered,
                lambda rid, job: pipeline.cancel_orphan("fal", rid, str(job)),
            )
        servers: list[HttpServer] = []
        http_url = operator_url = None
        if settings.http_port is not None:
            servers.append(
                HttpServer(
                    build_public_app(db, metrics, hooks),
                    settings.http_host,
                    settings.http_port,
                    public_limits(settings),
                    name="public",
                )
            )
            http_url = await servers[-1].start()
            if settings.operator_port is None and hooks is None:
                # a port with nothing public behind it: most likely set for /metrics, as before
                log_event(
                    log,
                    "worker.operator_listener_off",
                    logging.WARNING,
                    reason="VIDANIM_HTTP_PORT serves only fal's webhooks (off here);"
                    " /metrics, /healthz and /readyz are served on VIDANIM_OPERATOR_PORT",
                )
        if settings.operator_port is not None:
            servers.append(
                HttpServer(
                    build_operator_app(db, metrics),
                    settings.operator_host,
                    settings.operator_port,
                    operator_limits(settings),
                    name="operator",
                )
            )
            operator_url = await servers[-1].start()
        yield WorkerApp(worker, store, providers, pool, metrics, http_url, operator_url)
    finally:
        for server in reversed(locals().get("servers", [])):
            await server.stop()
        if "metrics" in locals():
            await metrics.aclose()
        await http.aclose()
        if own_storage and "store" in locals():
            await store.aclose()
        for p in providers.values():
            await p.aclose()
        await pool.close()
