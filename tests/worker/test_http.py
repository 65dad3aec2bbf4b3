"""The worker's HTTP server itself (uvicorn on a socket of its own)."""

from __future__ import annotations

import socket

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

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
