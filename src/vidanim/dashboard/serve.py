"""`vidanim dashboard`: the dashboard in its own process, on loopback unless configured."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette

from vidanim.dashboard.app import create_app
from vidanim.logs import log_event
from vidanim.settings import Settings
from vidanim.worker.assemble import build_storage
from vidanim.worker.db import open_pool
from vidanim.worker.http import listening_socket

log = logging.getLogger("vidanim.dashboard")


@contextlib.asynccontextmanager
async def dashboard_app(settings: Settings) -> AsyncIterator[Starlette]:
    """The app over an open pool and Storage; both closed on the way out."""
    pool = open_pool(settings.require_database_url(), size=5)
    await pool.open()
    storage: Any = None
    try:
        storage = build_storage(settings, pool)
        yield create_app(settings, pool, storage)
    finally:
        if storage is not None:
            await storage.aclose()
        await pool.close()


async def serve(settings: Settings) -> None:
    async with dashboard_app(settings) as app:
        sock = listening_socket(settings.dashboard_host, settings.dashboard_port, "dashboard")
        host, port = sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
        server = uvicorn.Server(config)
        log_event(log, "dashboard.listening", host=host, port=port, url=f"http://{host}:{port}")
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
