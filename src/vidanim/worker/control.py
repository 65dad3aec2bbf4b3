"""What every stage of a job shares, and the one way a stage makes a job wait or end.

`JobControl` carries the signals into a running job (canceled, lease lost, worker
stopping, webhook delivered). `StageContext` holds the worker's parts, one per
pipeline. `Stage` is the base of every stage and holds the job's outcomes: a stage
never writes a job's wait or failure itself, it goes through these methods, or
answers a `Verdict` (`Wait`, `Fail`, `GiveUp`) that `_settle` applies:

    _wait / _defer     the job waits in queued for what is not its user's doing
    _storage_fault     Storage refuses us or is down: the job waits, logged for an operator; a refused
                       key opens Storage's breaker (`_storage_gate` / `_storage_answered` around it)
    _give_up           the providers could not take it: a retry later, or a failure
    _fail              the job fails, with a message written for its user (refund by trigger)
    _cancel            ask the provider to stop a task (best effort)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from vidanim.errors import Conflict
from vidanim.jobs import Job
from vidanim.logs import log_event
from vidanim.providers.base import (
    PermanentProviderError,
    Provider,
    ProviderError,
    TaskStatus,
    TransientProviderError,
)
from vidanim.settings import Settings
from vidanim.storage.base import Storage, StorageError
from vidanim.worker.backoff import backoff_delay
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.metrics import WorkerMetrics, outcome_of

# Storage has a breaker of its own among the providers' (0023): a refused key is shared news.
STORAGE_BREAKER = "storage"
log = logging.getLogger("vidanim.worker")

UNAVAILABLE = "The video providers are not available right now; the job will not be charged. Please try again later."
RETRYING = "The video providers could not take this job just now; it will be tried again shortly."
REFUSED = "The video providers refused this request."
# Refusals about the user's own request: their message goes to the user as is.
USER_FAULT_CODES = ("content_moderated", "input_refused")


@dataclass
class JobControl:
    """Signals from the lease renewer and the worker to one running job."""

    canceled: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: a webhook delivery for the job's task was recorded (set by the worker's listener)
    delivered: asyncio.Event = field(default_factory=asyncio.Event)

    def interrupted(self) -> bool:
        return self.canceled.is_set() or self.lost.is_set() or self.stopping.is_set()

    async def wait(self, seconds: float, *, delivery: bool = False) -> None:
        """Sleep, waking early if the job is canceled, its lease lost, or the worker stops
        (and, with `delivery`, when a webhook delivery for it arrives)."""
        events = (self.canceled, self.lost, self.stopping) + ((self.delivered,) if delivery else ())
        if self.interrupted() or seconds <= 0 or (delivery and self.delivered.is_set()):
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


@dataclass(frozen=True)
class Wait:
    """The job waits `seconds` in queued for `reason` (a `waiting_reason` code), no attempt spent."""

    reason: str
    seconds: float


@dataclass(frozen=True)
class Fail:
    """The job fails with `code` and `message`, written for its user."""

    code: str
    message: str


@dataclass(frozen=True)
class GiveUp:
    """No provider took the job: a retry later while attempts remain and an error was transient, else a failure."""

    errors: list[ProviderError]


Verdict = Wait | Fail | GiveUp


@dataclass
class StageContext:
    """The worker's parts every stage uses; one per pipeline, shared, so a part replaced is replaced for all."""

    settings: Settings
    db: ServiceDatabase
    storage: Storage
    providers: dict[str, Provider]
    http: httpx.AsyncClient
    metrics: WorkerMetrics
    #: the configured providers, in the order a job tries them
    order: list[str]


class Stage:
    """A step of a job's life: the shared context, and the job's outcomes every step goes through."""

    def __init__(self, context: StageContext):
        self.context = context

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def db(self) -> ServiceDatabase:
        return self.context.db

    @property
    def storage(self) -> Storage:
        return self.context.storage

    @storage.setter
    def storage(self, storage: Storage) -> None:
        self.context.storage = storage

    @property
    def providers(self) -> dict[str, Provider]:
        return self.context.providers

    @property
    def http(self) -> httpx.AsyncClient:
        return self.context.http

    @property
    def metrics(self) -> WorkerMetrics:
        return self.context.metrics

    @property
    def order(self) -> list[str]:
        return self.context.order

    @property
    def worker_id(self) -> str:
        return self.context.settings.worker_id

    def _fields(self, job: Job, **extra: Any) -> dict[str, Any]:
        return {"job_id": str(job.id), "user_id": str(job.user_id), "worker_id": self.worker_id, **extra}

    def _webhooks(self, provider: str | None) -> bool:
        """Whether the provider's tasks report by webhook (fal, with a public URL set)."""
        return provider == "fal" and self.settings.fal_webhooks

    def _delay(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_delay(
            attempt, base=self.settings.retry_base_seconds, cap=self.settings.retry_cap_seconds, retry_after=retry_after
        )

    async def _poll(self, provider: Provider, task_id: str) -> TaskStatus:
        """One status request, timed for the metrics."""
        started = time.monotonic()
        try:
            status = await provider.status(task_id)
        except ProviderError as exc:
            self.metrics.observe_call(provider.name, "status", outcome_of(exc), time.monotonic() - started)
            raise
        self.metrics.observe_call(provider.name, "status", "ok", time.monotonic() - started)
        return status

    # the job's outcomes --------------------------------------------------------------------
    async def _settle(self, job: Job, verdict: Verdict) -> None:
        """Apply what a stage answered."""
        if isinstance(verdict, Wait):
            await self._wait(job, verdict.reason, verdict.seconds)
        elif isinstance(verdict, Fail):
            await self._fail(job, verdict.code, verdict.message)
        else:
            await self._give_up(job, verdict.errors)

    async def _wait(self, job: Job, reason: str, delay: float, level: int = logging.INFO, **extra: Any) -> None:
        """Leave the job to wait `delay` seconds for what is not the user's doing, saying why (a
        `waiting_reason` code); logged as `job.waiting`."""
        log_event(log, "job.waiting", level, **self._fields(job, reason=reason, retry_in=round(delay, 3), **extra))
        await self._defer(job, reason, delay)

    async def _defer(self, job: Job, reason: str, delay: float) -> None:
        with contextlib.suppress(Conflict):  # canceled or taken over meanwhile: nothing to leave
            await self.db.defer(job.id, self.worker_id, delay, reason)

    async def _storage_fault(self, job: Job, exc: StorageError, fields: dict[str, Any]) -> None:
        """Storage is refusing us (our key, our bug) or is down: the job waits, nobody pays again.

        The job keeps its finished provider task and is due again later; its user sees
        that it waits. 401/403 mean the worker's key: Storage's breaker opens, shared by
        every worker, with one alert (`storage.breaker_opened`), and jobs wait without
        asking Storage until one probe finds the key fixed. 415 means vidanim sent a type
        the bucket does not take, a bug: logged as an error for an operator.
        """
        delay = self.settings.storage_wait_seconds
        if exc.status in (401, 403):
            event, level, reason = "storage.refused", logging.ERROR, "Storage refused the worker's key"
            previous, until = await self.db.open_breaker(STORAGE_BREAKER, "credentials", reason, max(delay, 1.0))
            if previous == "closed":  # a failed probe keeps it open: no second alert
                log_event(log, "storage.breaker_opened", logging.ERROR, **fields, code=exc.code, reason=str(exc))
            delay = max((until - datetime.now(UTC)).total_seconds(), 0.0)
        elif exc.status == 415:
            event, level, reason = "storage.refused", logging.ERROR, "Storage refused the video's type: a vidanim bug"
        else:
            event, level, reason = "storage.unavailable", logging.WARNING, "Storage is not available"
        log_event(log, event, level, **fields, status=exc.status, code=exc.code, reason=reason, retry_in=delay)
        await self._defer(job, "storage_unavailable", delay)

    async def _storage_gate(self, job: Job) -> bool | None:
        """Whether this job may ask Storage now: False when Storage's breaker is closed, True when
        it is open and this job is its one probe (close it with `_storage_answered` once Storage
        answers), None when the job waits instead, without a request Storage would refuse again."""
        breaker = (await self.db.breakers()).get(STORAGE_BREAKER)
        if breaker is None or breaker.state == "closed":
            return False
        if await self.db.begin_probe(STORAGE_BREAKER, job.id, max(self.settings.storage_wait_seconds, 1.0)):
            log_event(log, "storage.probe", **self._fields(job))
            return True
        left = (breaker.open_until - datetime.now(UTC)).total_seconds() if breaker.open_until else 0.0
        await self._defer(job, "storage_unavailable", max(left, 1.0))
        return None

    async def _storage_answered(self, job: Job) -> None:
        """The probe's request went through: Storage takes the worker's key again."""
        if await self.db.close_breaker(STORAGE_BREAKER):
            log_event(log, "storage.breaker_closed", **self._fields(job))

    async def _give_up(self, job: Job, errors: list[ProviderError]) -> None:
        transient = any(isinstance(e, TransientProviderError) for e in errors)
        if transient and job.attempts < self.settings.job_max_attempts:
            delay = self._delay(job.attempts)
            log_event(
                log,
                "job.retry_scheduled",
                logging.WARNING,
                **self._fields(job, delay=round(delay, 3), attempts=job.attempts),
            )
            with contextlib.suppress(Conflict):  # canceled or taken over meanwhile
                await self.db.schedule_retry(job.id, self.worker_id, delay, "providers_unavailable", RETRYING)
                # the providers' own words are the operator's, never the user's
                await self.db.note_error_detail(job.id, errors[-1].message if errors else None)
            return
        permanent = [e for e in errors if isinstance(e, PermanentProviderError)]
        if permanent and not transient:
            moderated = next((e for e in permanent if e.code in USER_FAULT_CODES), None)
            chosen = moderated or permanent[-1]
            message = chosen.message if moderated else REFUSED
            await self._fail(job, chosen.code, message, detail=chosen.message)
        else:
            await self._fail(job, "providers_unavailable", UNAVAILABLE)

    async def _fail(
        self,
        job: Job,
        code: str,
        message: str,
        raw: str | None = None,
        *,
        task: tuple[str, str] | None = None,
        detail: str | None = None,
    ) -> None:
        """Fail the job with `message`, written for its user; `detail` is the operator's (logs, internals)."""
        provider, task_id = task or (job.provider, job.provider_task_id)
        log_event(
            log,
            "job.failed",
            logging.WARNING,
            **self._fields(job, provider=provider, task_id=task_id, error_code=code, error=message, detail=detail),
        )
        try:
            await self.db.update_status(
                job.id, "failed", worker_id=self.worker_id, error_code=code, error_message=message, provider_status=raw
            )
        except Conflict as exc:
            log_event(log, "job.fail_refused", logging.WARNING, **self._fields(job, reason=exc.message))
            return
        if detail is not None and detail != message:
            await self.db.note_error_detail(job.id, detail)
        self.metrics.observe_end(provider, "failed", code, job.attempts)

    async def _cancel_task(self, job: Job, provider: Provider, task_id: str) -> None:
        await self._cancel(provider, task_id, self._fields(job, provider=provider.name, task_id=task_id))

    async def _cancel(
        self,
        provider: Provider,
        task_id: str,
        fields: dict[str, Any],
        event: str = "provider.canceled",
        level: int = logging.INFO,
    ) -> None:
        """Ask the provider to stop a task (best effort), and log what came of it as `event`."""
        try:
            await provider.cancel(task_id)
            log_event(log, event, level, **fields)
        except ProviderError as exc:
            log_event(log, "provider.cancel_failed", logging.WARNING, **fields, reason=exc.message)
