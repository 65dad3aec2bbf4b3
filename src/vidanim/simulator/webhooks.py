"""The simulator's fal webhooks: signed as fal signs them, retried until answered 2xx.

Each delivery is POSTed when its task finishes, signed with the simulator's own
ED25519 key (its JWKS is served at /.well-known/jwks.json), and retried with a
growing delay until the receiver answers 2xx or `max_attempts` are spent, as fal
retries its deliveries. Faults apply to the next deliveries scheduled:

    drop           never sent
    duplicate      sent twice
    delay          sent `seconds` late
    reorder        held until the next delivery has been sent (or `seconds` pass)
    bad_signature  the first attempt is signed with a key not in the JWKS

Deliveries are signed for the fal account `user_id` (as fal signs each account's
with one key); a test sets another to play a foreign account.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vidanim.webhooks.fal import (
    HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_USER_ID,
    jwk_of,
    sign,
)

FAULTS = ("drop", "duplicate", "delay", "reorder", "bad_signature")
USER_ID = "sim-fal-user"


@dataclass(order=True)
class Pending:
    due: float
    seq: int
    request_id: str = field(compare=False)
    url: str = field(compare=False)
    #: the body as the task stands when first sent (a task canceled meanwhile reports that)
    make_body: Callable[[], dict[str, Any]] = field(compare=False)
    body: bytes | None = field(default=None, compare=False)
    attempt: int = field(default=0, compare=False)
    bad_signature: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Answer:
    """One delivery attempt and what the receiver answered (0: no answer)."""

    request_id: str
    status: int
    at: float
    bad_signature: bool


class WebhookDispatcher:
    def __init__(
        self,
        *,
        max_attempts: int = 20,
        retry_base: float = 0.2,
        retry_cap: float = 5.0,
        threads: int = 16,
        user_id: str = USER_ID,
    ):
        self.key = Ed25519PrivateKey.generate()
        #: the fal account the deliveries are signed for (X-Fal-Webhook-User-Id); a test may change it
        self.user_id = user_id
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        #: every attempt, in order
        self.answers: list[Answer] = []
        self._heap: list[Pending] = []
        self._held: list[Pending] = []
        self._faults: deque[tuple[str, float]] = deque()
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._http = httpx.Client(timeout=15.0, limits=httpx.Limits(max_connections=threads))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sim-webhook")
        self._thread = threading.Thread(target=self._run, name="sim-webhooks", daemon=True)
        self._thread.start()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [jwk_of(self.key.public_key(), kid="sim")]}

    def fault_next(self, kind: str, count: int = 1, seconds: float = 1.0) -> None:
        assert kind in FAULTS, kind
        with self._cond:
            self._faults.extend([(kind, seconds)] * count)

    def schedule(self, request_id: str, url: str, make_body: Callable[[], dict[str, Any]], at: float) -> None:
        """Deliver what `make_body()` says of `request_id` to `url` at monotonic time `at` (faults permitting)."""
        with self._cond:
            kind, seconds = self._faults.popleft() if self._faults else ("", 0.0)
            if kind == "drop":
                return
            item = Pending(at + (seconds if kind == "delay" else 0.0), next(self._seq), request_id, url, make_body)
            item.bad_signature = kind == "bad_signature"
            if kind == "reorder":
                item.due = at + seconds  # the latest it waits for another delivery to pass it
                self._held.append(item)
            heapq.heappush(self._heap, item)
            if kind == "duplicate":
                heapq.heappush(self._heap, Pending(item.due, next(self._seq), request_id, url, make_body))
            self._cond.notify()

    def attempts_for(self, request_id: str) -> list[Answer]:
        with self._cond:
            return [a for a in self.answers if a.request_id == request_id]

    def idle(self) -> bool:
        with self._cond:
            return not self._heap

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    # internals --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].due > time.monotonic()):
                    timeout = self._heap[0].due - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                item = heapq.heappop(self._heap)
                if item in self._held:
                    self._held.remove(item)
            self._pool.submit(self._send, item)

    def _send(self, item: Pending) -> None:
        if item.body is None:
            item.body = json.dumps(item.make_body()).encode()
        timestamp = str(int(time.time()))
        key = Ed25519PrivateKey.generate() if item.bad_signature else self.key
        headers = {
            "Content-Type": "application/json",
            HEADER_REQUEST_ID: item.request_id,
            HEADER_USER_ID: self.user_id,
            HEADER_TIMESTAMP: timestamp,
            HEADER_SIGNATURE: sign(key, item.request_id, self.user_id, timestamp, item.body),
        }
        try:
            status = self._http.post(item.url, content=item.body, headers=headers).status_code
        except httpx.HTTPError:
            status = 0
        with self._cond:
            self.answers.append(Answer(item.request_id, status, time.time(), item.bad_signature))
            if 200 <= status < 300:
                # a held (reordered) delivery goes once another has passed it
                for held in self._held:
                    held.due = time.monotonic()
                self._held.clear()
                heapq.heapify(self._heap)
            elif item.attempt + 1 < self.max_attempts and not self._stopped:
                delay = min(self.retry_base * 2**item.attempt, self.retry_cap)
                again = Pending(time.monotonic() + delay, next(self._seq), item.request_id, item.url, item.make_body)
                again.body, again.attempt = item.body, item.attempt + 1
                heapq.heappush(self._heap, again)
            self._cond.notify()
