"""How long and how many connections a worker's HTTP listener holds, and how little it logs about those it sheds.

`GuardedProtocol` is uvicorn's httptools protocol with three limits uvicorn lacks
for a connection that never completes a request (a slow-loris): its request headers
must arrive within `header_timeout_seconds` of the connection (or of the first byte of
a later request on it), its body within `body_timeout_seconds` after them, and no more
than `max_connections` are held at once; a connection beyond that is answered 503 and
closed before anything of it is read. Idle keep-alive connections are uvicorn's
`timeout_keep_alive`.

`BoundedLogs` keeps the loggers uvicorn and asyncio write to from printing a
traceback per connection: each distinct message is passed on at most once per
BOUNDED_LOG_SECONDS, the first with its traceback (none for an OSError: a socket's
says no more than its message), the rest counted into the next.
(asyncio's accept loop, out of descriptors, reports EMFILE once per pending connection
on every turn of the loop: that is how 1,100 connections wrote 126 MB to stderr.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from vidanim.logs import log_event

log = logging.getLogger("vidanim.worker")

# at most one summary line of shed connections per listener this often
SHED_LOG_SECONDS = 10.0
# each distinct uvicorn/asyncio message at most once this often
BOUNDED_LOG_SECONDS = 10.0
# the loggers uvicorn and asyncio report connection trouble on
NOISY_LOGGERS = ("uvicorn.error", "asyncio")
_BUSY_BODY = b"too many connections"
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"retry-after: 5\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


@dataclass(frozen=True)
class ListenerLimits:
    """A listener's limits; the defaults are the public listener's."""

    header_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 15.0
    max_connections: int = 256
    keep_alive_seconds: int = 5
    #: the listening socket's queue of connections not yet accepted; also how many asyncio accepts in one
    #: turn of its loop before any is refused and closed, so it bounds the descriptors a burst takes at once
    backlog: int = 128


@dataclass
class ShedCounts:
    """Connections a listener shed since it started, by reason (and how many since the last summary)."""

    header_timeouts: int = 0
    body_timeouts: int = 0
    over_capacity: int = 0
    _logged: dict[str, int] = field(default_factory=dict)
    _last_log: float = 0.0

    def total(self) -> dict[str, int]:
        return {
            "header_timeouts": self.header_timeouts,
            "body_timeouts": self.body_timeouts,
            "over_capacity": self.over_capacity,
        }

    def note(self, name: str, url: str) -> None:
        """Log a summary now if the last one is old enough (one line per SHED_LOG_SECONDS at most)."""
        now = time.monotonic()
        if now - self._last_log < SHED_LOG_SECONDS:
            return
        self._last_log = now
        totals = self.total()
        since = {k: v - self._logged.get(k, 0) for k, v in totals.items()}
        self._logged = totals
        log_event(log, "http.connections_shed", logging.WARNING, listener=name, url=url, **since)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout, a body timeout and a cap on connections."""

    limits: ClassVar[ListenerLimits] = ListenerLimits()
    shed: ClassVar[ShedCounts]
    listener: ClassVar[str] = "http"
    listener_url: ClassVar[str] = ""

    @classmethod
    def bound(cls, limits: ListenerLimits, *, name: str, url: str) -> type[GuardedProtocol]:
        """A subclass holding one listener's limits and counts (uvicorn builds the protocol from a class)."""
        attrs = {"limits": limits, "shed": ShedCounts(), "listener": name, "listener_url": url}
        return cast("type[GuardedProtocol]", type(f"GuardedProtocol_{name}", (cls,), attrs))

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._refused = False
        self._headers_due: asyncio.TimerHandle | None = None
        self._body_due: asyncio.TimerHandle | None = None

    def _shed(self, reason: str) -> None:
        setattr(self.shed, reason, getattr(self.shed, reason) + 1)
        self.shed.note(self.listener, self.listener_url)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # Nothing of it is read: a short answer, then the descriptor is free again.
            self._refused = True
            transport.write(BUSY_RESPONSE)
            transport.close()
            self._shed("over_capacity")
            return
        super().connection_made(transport)
        self._headers_due = self.loop.call_later(self.limits.header_timeout_seconds, self._too_slow, "header_timeouts")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        # a later request on a kept-alive connection: its headers are due in as long as the first's
        if self._headers_due is None:
            self._headers_due = self.loop.call_later(
                self.limits.header_timeout_seconds, self._too_slow, "header_timeouts"
            )
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None
        self._body_due = self.loop.call_later(self.limits.body_timeout_seconds, self._too_slow, "body_timeouts")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._body_due is not None:
            self._body_due.cancel()
            self._body_due = None
        super().on_message_complete()

    def _too_slow(self, reason: str) -> None:
        self._headers_due = self._body_due = None
        if not self.transport.is_closing():
            self._shed(reason)
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._headers_due, self._body_due):
            if timer is not None:
                timer.cancel()
        self._headers_due = self._body_due = None


class BoundedLogs(logging.Filter):
    """Each distinct message at most once per BOUNDED_LOG_SECONDS; the repeats dropped and counted."""

    _installed: ClassVar[BoundedLogs | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, every: float = BOUNDED_LOG_SECONDS) -> None:
        super().__init__()
        self.every = every
        self._seen: dict[tuple[str, int, str, str], tuple[float, int]] = {}

    @classmethod
    def install(cls) -> BoundedLogs:
        """On uvicorn's and asyncio's loggers, once per process."""
        with cls._lock:
            if cls._installed is None:
                cls._installed = cls()
                for name in NOISY_LOGGERS:
                    logging.getLogger(name).addFilter(cls._installed)
            return cls._installed

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            first_line = record.getMessage().split("\n", 1)[0][:200]
        except Exception:  # a record that cannot format itself: keep it, it is not a flood
            return True
        error = record.exc_info[1] if record.exc_info else None
        key = (record.name, record.levelno, first_line, type(error).__name__)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.every:
            self._seen[key] = (seen[0], seen[1] + 1)
            return False
        if len(self._seen) > 1000:  # many distinct messages: forget the old ones, stay bounded
            self._seen.clear()
        self._seen[key] = (now, 0)
        if seen is not None or isinstance(error, OSError):
            # Shown the first time; and an OSError's (a socket's, an accept's) says no more than its message.
            if error is not None:
                record.msg = f"{record.msg} [{type(error).__name__}: {error}]"
            record.exc_info = None
            record.exc_text = None
            if seen is not None and seen[1]:
                record.msg = f"{record.msg} ({seen[1]} more like this in the last {now - seen[0]:.0f} s, not shown)"
        return True
