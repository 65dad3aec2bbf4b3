"""What every provider client offers, and how its errors are classified.

ProviderError
 ├── TransientProviderError   retry later (timeouts, connection errors, 408/409/
 │   │                        429/5xx, X-Fal-Retryable: true); carries Retry-After
 │   ├── SubmissionUncertain  a submission went out and its answer was lost (a read
 │   │                        timeout, a reset): the provider may run a paid task
 │   │                        nobody holds, so it is not simply repeated
 │   └── LocalFault           the call never left this process because of this
 │                            process's own trouble (out of descriptors or memory,
 │                            our DNS): the job waits, and no breaker every worker
 │                            shares opens on it
 ├── PermanentProviderError   do not retry (other 4xx, moderation, a failed task);
 │   │                        carries a message a user can read
 │   └── InputRefused         the provider refused the input image itself (fal 422
 │                            on image_url, Runway 400 on promptImage)
 └── OperatorFault            the provider's or the operator's fault, never the
                              request's: a bad key (401/403), no credits (402, a
                              locked account), a model that does not exist (404 on
                              submit). It opens the provider's circuit breaker;
                              the job waits or falls back, it never fails.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

# Statuses both SDKs retry (fal-client, runwayml _should_retry) and the providers'
# docs call transient.
TRANSIENT_HTTP = frozenset({408, 409, 429, 500, 502, 503, 504})
# Default requests in flight per provider client (VIDANIM_PROVIDER_MAX_CONNECTIONS).
# A worker runs up to thousands of jobs; beyond this many requests they wait on a
# semaphore (O(1)) rather than in httpcore's pool, whose bookkeeping costs grow
# with the queue and with the number of connections (each assignment checks every
# connection with system calls): it dominated the worker's CPU at 1,000 jobs.
MAX_IN_FLIGHT = 32
# Retry-After longer than this is treated as this: a worker should not sleep for
# an hour inside one job; the job-level retry takes over.
MAX_RETRY_AFTER = 120.0


class TaskState(enum.StrEnum):
    """A provider task's state, mapped onto vidanim's job states."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class ProviderError(Exception):
    """A provider call failed."""

    def __init__(self, message: str, *, code: str = "provider_error", status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code


class TransientProviderError(ProviderError):
    """The call may succeed if repeated later."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "provider_unavailable",
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code, status_code=status_code)
        self.retry_after = retry_after


class SubmissionUncertain(TransientProviderError):
    """The submission was sent and its answer lost: a paid task may have started."""


class LocalFault(TransientProviderError):
    """The request never reached the provider because of this worker's own trouble, not the provider's.

    Another worker (or this one, once it has descriptors again) may well reach the
    provider: a breaker every worker shares must not open on it.
    """


class PermanentProviderError(ProviderError):
    """Repeating the call will not help; `message` is fit for the user."""


# OperatorFault kinds that are the settings' fault: a refused key, a model the provider does not have.
CONFIGURATION_KINDS = frozenset({"credentials", "model"})


class OperatorFault(ProviderError):
    """Nothing the user did: the provider cannot take any job until an operator acts (or it recovers)."""

    def __init__(self, message: str, *, kind: str, code: str = "provider_unavailable", status_code: int | None = None):
        super().__init__(message, code=code, status_code=status_code)
        #: credentials | credits | model | outage
        self.kind = kind

    @property
    def configuration(self) -> bool:
        """Whether the fault is in what the operator configured (the key, the model), not in the
        account's state or the provider's health: only a restart with other settings mends it."""
        return self.kind in CONFIGURATION_KINDS


# What to change, appended to a provider's reason for refusing an image.
INPUT_ADVICE = (
    "Use a PNG, JPEG or WebP photo at least 300 pixels on each side,"
    " no more than twice as wide as it is tall (or as tall as it is wide)."
)


class InputRefused(PermanentProviderError):
    """The provider refused the input image itself; the same image will not do."""

    def __init__(self, provider: str, reason: str, *, status_code: int | None = None):
        reason = " ".join(reason.split())[:200].rstrip(".")
        super().__init__(
            f"The video provider could not use this image ({reason}). {INPUT_ADVICE}",
            code="input_refused",
            status_code=status_code,
        )
        self.provider = provider
        self.reason = reason


def body_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True)
class Submission:
    """A task the provider accepted."""

    provider: str
    task_id: str
    raw_status: str


@dataclass(frozen=True)
class TaskStatus:
    """One poll of a task."""

    state: TaskState
    raw_status: str
    output_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: 0-100 when the provider says how far along the task is (Runway), else None
    progress: int | None = None
    #: the task's place in the provider's queue when it says (fal), else None
    queue_position: int | None = None


class Provider(Protocol):
    """An image-to-video provider."""

    name: str
    #: seconds between polls, as the provider recommends
    poll_interval: float

    async def submit(
        self, image_url: str, prompt: str | None, options: dict[str, Any], *, webhook_url: str | None = None
    ) -> Submission:
        """Start a task (asking for a webhook at `webhook_url` where the provider has them).

        Raises TransientProviderError (SubmissionUncertain when the answer was lost),
        PermanentProviderError or OperatorFault.
        """
        ...

    def from_delivery(self, body: dict[str, Any]) -> TaskStatus | None:
        """A finished task's status from a verified webhook body; None: poll for it instead."""
        ...

    async def status(self, task_id: str) -> TaskStatus:
        """Poll a task; a completed one carries a fresh output URL."""
        ...

    async def cancel(self, task_id: str) -> None:
        """Ask the provider to stop (or forget) the task; best effort."""
        ...

    async def check_credentials(self) -> str:
        """A cheap authenticated call; what it learned, or OperatorFault / TransientProviderError."""
        ...

    async def aclose(self) -> None: ...


def parse_retry_after(response: httpx.Response) -> float | None:
    """Seconds from Retry-After (delta or HTTP date), or retry-after-ms, capped."""
    if ms := response.headers.get("retry-after-ms"):
        try:
            return min(max(float(ms) / 1000, 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# Failures after the whole request went out: the provider may have acted on it.
ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)
# This process (or host) is out of a resource: descriptors (EMFILE, ENFILE), buffers, memory.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def local_cause(exc: BaseException) -> str | None:
    """What in `exc`'s chain of causes is this process's own trouble, or None if nothing is.

    A failed name lookup (socket.gaierror) is ours: the resolver is the host's, and the
    providers' names do not vanish. A refused connection is not: the refusal is an
    answer from the provider's address (or its load balancer), so it counts as theirs.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return f"name lookup failed ({current})"
        if isinstance(current, OSError) and current.errno in LOCAL_ERRNOS:
            return f"{errno.errorcode.get(current.errno or 0, 'OSError')}: {current.strerror or current}"
        current = current.__cause__ or current.__context__
    return None


def classify_transport_error(
    provider: str, exc: httpx.TransportError, *, submit: bool = False
) -> TransientProviderError:
    """Timeouts and connection failures are transient; a submission's lost answer is uncertain;
    a request this process could not send for its own trouble is a LocalFault."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
    if submit and isinstance(exc, ANSWER_LOST):
        return SubmissionUncertain(
            f"{provider} received the submission but its answer was lost ({type(exc).__name__})",
            code=f"{provider}_answer_lost",
        )
    if cause := local_cause(exc):
        return LocalFault(f"{provider} was not called: this worker's own fault, {cause}", code="worker_local_fault")
    return TransientProviderError(f"{provider} {kind}", code=f"{provider}_unreachable")


def error_detail(response: httpx.Response) -> str:
    """A short, log-safe description of an error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("detail", "error", "message", "failure"):
            if key in body:
                value = body[key]
                return value if isinstance(value, str) else str(value)[:200]
    return str(body)[:200]


class ProviderHttp:
    """One provider's HTTP client: explicit timeouts, bounded requests in flight, and
    every failure turned into a Transient- or PermanentProviderError.

    fal-client's lesson (PR #941): without explicit timeouts a stalled socket hangs a
    poll forever. The semaphore keeps requests beyond `max_connections` out of
    httpcore's pool queue (see MAX_IN_FLIGHT).
    """

    def __init__(
        self,
        provider: str,
        classify: Callable[[httpx.Response], ProviderError | None],
        *,
        headers: dict[str, str],
        base_url: str = "",
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = MAX_IN_FLIGHT,
    ):
        self.provider = provider
        self.classify = classify
        self.client = httpx.AsyncClient(
            base_url=base_url,
            headers={"User-Agent": "vidanim", **headers},
            timeout=timeout or httpx.Timeout(60.0, connect=10.0),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._slots = asyncio.Semaphore(max_connections)

    async def request(self, method: str, url: str, *, submit: bool = False, **kwargs: Any) -> httpx.Response:
        """One request; `submit` marks a request that starts a paid task (its lost answer is uncertain)."""
        try:
            async with self._slots:
                response = await self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise classify_transport_error(self.provider, exc, submit=submit) from exc
        if error := self.classify(response):
            raise error
        return response

    async def aclose(self) -> None:
        await self.client.aclose()
