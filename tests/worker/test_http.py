"""The worker's HTTP server itself (uvicorn on a socket of its own)."""

from __future__ import annotations

import socket
import uuid

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.worker.conftest import running
from vidanim.ports import free_port
from vidanim.worker.http import HttpServer


async def test_accepted_connections_send_without_waiting_for_the_clients_ack():
    """TCP_NODELAY on every connection: else each answer's body waits out the client's delayed ACK (40 ms)."""

    async def hello(request):
        return PlainTextResponse("hello")

    server = HttpServer(Starlette(routes=[Route("/", hello)]), "127.0.0.1", 0)
    url = await server.start()
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).text == "hello"
            (connection,) = server.server.server_state.connections
            sock = connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        await server.stop()


OPERATOR_PATHS = ("/metrics", "/healthz", "/readyz")


async def test_the_operator_endpoints_are_not_on_the_public_listener_but_on_the_operator_listener(settings_for, sim):
    port = free_port()
    settings = settings_for(
        providers="fal",
        http_port=port,
        operator_port=0,
        webhook_public_url=f"http://127.0.0.1:{port}",
        fal_webhook_jwks_urls=sim.jwks_url,
    )
    assert settings.operator_host == "127.0.0.1", "private unless the operator says otherwise"
    async with running(settings) as app, httpx.AsyncClient(timeout=10) as client:
        assert app.http_url is not None
        assert app.operator_url is not None
        assert app.operator_url.startswith("http://127.0.0.1:")
        for path in OPERATOR_PATHS:
            assert (await client.get(f"{app.http_url}{path}")).status_code == 404, path
            assert (await client.get(f"{app.operator_url}{path}")).status_code == 200, path
        hook = f"/webhooks/fal/{uuid.uuid4()}"
        assert (await client.post(f"{app.http_url}{hook}", content=b"{}")).status_code == 401, "fal's route, refused"
        assert (await client.post(f"{app.operator_url}{hook}", content=b"{}")).status_code == 404


async def test_without_an_operator_port_no_listener_serves_the_operator_endpoints(settings_for):
    async with running(settings_for(http_port=0)) as app, httpx.AsyncClient(timeout=10) as client:
        assert app.operator_url is None
        assert app.http_url is not None
        for path in OPERATOR_PATHS:
            assert (await client.get(f"{app.http_url}{path}")).status_code == 404, path
