"""Build a worker from settings: the one place that knows every layer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from psycopg_pool import AsyncConnectionPool

from vidanim.providers.base import Provider
from vidanim.providers.fal import FalProvider
from vidanim.providers.runway import RunwayProvider
from vidanim.settings import Settings
from vidanim.storage.base import Storage
from vidanim.storage.local import LocalStorage
from vidanim.storage.supabase import SupabaseStorage
from vidanim.webhooks.fal import FalWebhookVerifier, JwksKeys
from vidanim.worker.db import ServiceDatabase, open_pool
from vidanim.worker.http import FalWebhooks, HttpServer, build_app
from vidanim.worker.metrics import WorkerMetrics
from vidanim.worker.pipeline import JobPipeline
from vidanim.worker.runner import Worker
from vidanim.worker.transfer import tune_http_reads


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


def build_storage(settings: Settings, pool: AsyncConnectionPool[Any]) -> Storage:
    if settings.storage_backend == "supabase":
        if not settings.supabase_url or settings.supabase_service_role_key is None:
            raise ConfigurationError(
                "storage_backend=supabase needs VIDANIM_SUPABASE_URL and VIDANIM_SUPABASE_SERVICE_ROLE_KEY"
            )
        return SupabaseStorage(
            supabase_url=settings.supabase_url, service_role_key=settings.supabase_service_role_key.get_secret_value()
        )
    local = LocalStorage(
        root=settings.local_storage_dir,
        pool=pool,
        signing_secret=settings.local_storage_secret.get_secret_value() if settings.local_storage_secret else None,
    )
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
    #: where /metrics, /healthz and /readyz are served (None: VIDANIM_HTTP_PORT unset)
    http_url: str | None = None


@contextlib.asynccontextmanager
async def assembled(
    settings: Settings,
    *,
    providers: dict[str, Provider] | None = None,
    storage: Storage | None = None,
) -> AsyncIterator[WorkerApp]:
    """A ready worker and everything it holds, closed on exit."""
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
            hooks = FalWebhooks(
                FalWebhookVerifier(keys),
                settings.fal_key.get_secret_value(),
                worker.delivered,
                lambda rid, job: pipeline.cancel_orphan("fal", rid, str(job)),
            )
        if settings.http_port is not None:
            server = HttpServer(build_app(db, metrics, hooks), settings.http_host, settings.http_port)
            http_url = await server.start()
        else:
            http_url = None
        yield WorkerApp(worker, store, providers, pool, metrics, http_url)
    finally:
        if "server" in locals():
            await server.stop()
        await http.aclose()
        if own_storage and "store" in locals():
            await store.aclose()
        for p in providers.values():
            await p.aclose()
        await pool.close()
