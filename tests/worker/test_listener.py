"""The guarded uvicorn protocol on a real socket: header and body timeouts, the connection cap, bounded logs."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from vidanim.worker.http import BodyIncomplete, HttpServer, read_body
from vidanim.worker.listener import BoundedLogs, ListenerLimits

# generous: an event must happen within this long, never a fixed sleep
WAIT = 10.0
PARTIAL_REQUEST = b"POST /webhooks/fal/x HTTP/1.1\r\nHost: worker\r\n"  # the headers never end


async def echo(request: Request) -> Response:
    try:
        body = await read_body(request, 1024)
    except BodyIncomplete:
        return PlainTextResponse("incomplete", status_code=408)
    return PlainTextResponse(f"{len(body)} bytes")


@pytest.fixture
async def server_with(request) -> AsyncIterator:
    servers: list[HttpServer] = []

    async def start(**limits) -> HttpServer:
        server = HttpServer(
            Starlette(routes=[Route("/", echo, methods=["POST", "GET"])]), "127.0.0.1", 0, ListenerLimits(**limits)
        )
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


async def connect(server: HttpServer, first_bytes: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.sock.getsockname()[:2]
    reader, writer = await asyncio.open_connection(host, port)
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    return reader, writer


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (EOF), failing after WAIT."""
    async with asyncio.timeout(WAIT):
        return await reader.read()


async def test_a_connection_that_never_finishes_its_headers_is_closed_after_the_header_timeout(server_with):
    server = await server_with(header_timeout_seconds=0.3)
    reader, writer = await connect(server, PARTIAL_REQUEST)
    try:
        assert await until_closed(reader) == b"", "closed without an answer"
    finally:
        writer.close()
    assert server.shed.header_timeouts == 1


async def test_a_client_that_connects_and_sends_nothing_is_closed_after_the_header_timeout(server_with):
    server = await server_with(header_timeout_seconds=0.3)
    reader, writer = await connect(server)
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert server.shed.header_timeouts == 1


async def test_a_later_request_on_a_kept_alive_connection_must_finish_its_headers_in_time_too(server_with):
    server = await server_with(header_timeout_seconds=0.3, keep_alive_seconds=60)
    reader, writer = await connect(server, b"GET / HTTP/1.1\r\nHost: worker\r\n\r\n")
    try:
        async with asyncio.timeout(WAIT):
            await reader.readuntil(b"0 bytes")  # the first request is answered; the connection stays
        writer.write(PARTIAL_REQUEST)  # the second never ends its headers
        await writer.drain()
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert server.shed.header_timeouts == 1


async def test_a_body_that_trickles_is_cut_off_after_the_body_timeout(server_with):
    server = await server_with(header_timeout_seconds=WAIT, body_timeout_seconds=0.3)
    reader, writer = await connect(server, b"POST / HTTP/1.1\r\nHost: worker\r\nContent-Length: 100\r\n\r\nx")
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert (server.shed.body_timeouts, server.shed.header_timeouts) == (1, 0)


async def test_a_prompt_request_is_served_within_the_timeouts_and_kept_alive(server_with):
    server = await server_with(header_timeout_seconds=0.3, body_timeout_seconds=0.3)
    async with httpx.AsyncClient() as client:
        first = await client.post(server.url, content=b"hello")
        second = await client.post(server.url, content=b"hi")  # the same connection, a later request
    assert (first.text, second.text) == ("5 bytes", "2 bytes")
    assert server.shed.total() == {"header_timeouts": 0, "body_timeouts": 0, "over_capacity": 0}


async def test_connections_beyond_the_cap_are_answered_503_at_once_unread_and_the_held_ones_kept(server_with):
    server = await server_with(max_connections=3, header_timeout_seconds=WAIT * 3)
    held = [await connect(server, PARTIAL_REQUEST) for _ in range(3)]
    try:
        async with asyncio.timeout(WAIT):
            while len(server.server.server_state.connections) < 3:
                await asyncio.sleep(0.01)
        reader, writer = await connect(server, PARTIAL_REQUEST)
        answer = await until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"connection: close" in answer
        assert server.shed.over_capacity == 1
        for held_reader, _ in held:
            assert not held_reader.at_eof(), "the connections within the cap are still held"
        # one leaves: a newcomer is served again
        held.pop()[1].close()
        async with asyncio.timeout(WAIT):
            while len(server.server.server_state.connections) >= 3:
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            assert (await client.get(server.url)).status_code == 200
    finally:
        for _, w in held:
            w.close()


def test_a_flood_of_one_error_logs_one_line_and_one_traceback(caplog):
    """asyncio out of descriptors reports EMFILE per pending connection, each with a traceback: one gets through."""
    BoundedLogs.install()
    caplog.set_level(logging.DEBUG)
    noisy = logging.getLogger("asyncio")
    error = OSError(24, "Too many open files")
    for _ in range(1000):
        noisy.error("socket.accept() out of system resource\nsocket: <fd=6>", exc_info=error)
    try:
        raise ValueError("a bug in a route")
    except ValueError:
        for _ in range(1000):
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    shown = [r for r in caplog.records if r.name in ("asyncio", "uvicorn.error")]
    assert [r.getMessage().split("\n")[0] for r in shown] == [
        "socket.accept() out of system resource",
        "Exception in ASGI application",
        "Invalid HTTP request received.",
    ]
    assert shown[0].exc_info is None, "an OSError's traceback says nothing its message does not"
    assert "Too many open files" in shown[0].getMessage()
    assert shown[1].exc_info is not None, "a bug's first traceback is kept"


def test_a_message_shown_again_after_the_quiet_interval_comes_without_its_traceback():
    bounded = BoundedLogs(every=0.0)
    error = ValueError("a bug")
    first, again = (
        logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "route failed", None, (ValueError, error, None))
        for _ in range(2)
    )
    assert bounded.filter(first)
    assert bounded.filter(again)
    assert first.exc_info is not None
    assert again.exc_info is None, "its traceback was shown the first time"


def test_the_busy_answer_is_well_formed_http():
    from vidanim.worker.listener import BUSY_RESPONSE

    head, _, body = BUSY_RESPONSE.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert f"content-length: {len(body)}".encode() in head


__all__ = ["socket"]
