"""Follow a task until it ends: its status from the webhook or a poll, its progress, its deadline.

Where a status comes from is a `StatusFeed`: polling at the provider's cadence,
slowing by POLL_GROWTH per answered poll up to twice it; or, for a provider that
reports by webhook, a `WebhookFeed` that reads the recorded delivery first, wakes
on a new one, and polls only at the fallback cadence (never right after the
submission). Each raw status change is recorded (the timeline), then the progress
read with it, at most once a second. The deadline bounds the provider's work: past
it a task still queued or running is canceled and the job fails; a video already
made is always delivered.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vidanim.errors import Conflict
from vidanim.jobs import Job
from vidanim.logs import log_event
from vidanim.providers.base import PermanentProviderError, Provider, TaskState, TaskStatus, TransientProviderError
from vidanim.worker.control import JobControl, Stage

log = logging.getLogger("vidanim.worker")

TIMED_OUT = "The video took too long to make and was stopped; the job was not charged."
PROVIDER_CANCELED = "The provider stopped working on this video."
# A job's progress is written at most this often.
PROGRESS_INTERVAL_SECONDS = 1.0
# Polls slow down by this factor up to twice the provider's cadence.
POLL_GROWTH = 1.25


@dataclass
class ProgressState:
    """What a job's progress was last written as, and when (monotonic seconds)."""

    written: tuple[int | None, int | None] = (None, None)
    at: float = float("-inf")


class StatusFeed:
    """A task followed by polling: when the next poll is due (monotonic seconds), and how the cadence moves."""

    def __init__(self, provider: Provider, interval: float, next_poll: float = 0.0):
        self.provider = provider
        self.interval = interval
        self.next_poll = next_poll
        self.failures = 0

    async def delivered(self) -> TaskStatus | None:
        """A status that came without a poll: none, for a polled task."""
        return None

    def due(self) -> bool:
        return time.monotonic() >= self.next_poll

    async def sleep(self, control: JobControl) -> None:
        """Until the next poll, or the job's interruption."""
        await control.wait(self.next_poll - time.monotonic())

    def answered(self) -> None:
        """A poll answered: the next after the cadence, which slows up to twice the provider's."""
        self.failures = 0
        self.next_poll = time.monotonic() + self.interval
        self.interval = min(self.interval * POLL_GROWTH, self.provider.poll_interval * 2)

    def unanswered(self, backoff: Callable[[int], float]) -> float:
        """A poll failed: the next after the longer of the cadence and `backoff` of the failures; that delay."""
        self.failures += 1
        delay = max(self.interval, backoff(min(self.failures - 1, 6)))
        self.next_poll = time.monotonic() + delay
        return delay


class WebhookFeed(StatusFeed):
    """A task that reports by webhook: `read` gives the recorded delivery; polls are the fallback."""

    def __init__(
        self,
        provider: Provider,
        interval: float,
        *,
        fresh: bool,
        read: Callable[[], Awaitable[tuple[bool, TaskStatus | None]]],
    ):
        super().__init__(provider, interval, time.monotonic() + interval if fresh else 0.0)
        self.read = read

    async def delivered(self) -> TaskStatus | None:
        delivered, status = await self.read()
        if delivered and status is None:
            self.next_poll = 0.0  # a delivery without its result (fal's payload_error): fetch it now
        return status

    async def sleep(self, control: JobControl) -> None:
        """Until the fallback poll, or a delivery for the job, or its interruption."""
        await control.wait(self.next_poll - time.monotonic(), delivery=True)

    def answered(self) -> None:
        """A fallback poll answered: the next one a whole fallback interval later (no growth)."""
        self.failures = 0
        self.next_poll = time.monotonic() + self.interval


class TaskFollower(Stage):
    """From a recorded task to its end: completed (handed to delivery), failed, canceled, timed out or left."""

    async def follow(
        self, job: Job, provider: Provider, task_id: str, raw: str, control: JobControl, *, fresh: bool = False
    ) -> TaskStatus | None:
        """Follow the task until it ends; its completed status, or None when the job ended or was left here.

        With webhooks a task is polled only every `fal_webhook_poll_seconds` (a lost
        delivery delays the job, never strands it), and not at all right after its
        submission; a recorded delivery wakes the job at once.
        """
        started = job.started_at.timestamp() if job.started_at else time.time()
        deadline = started + self.settings.job_deadline_seconds
        feed = self._feed(job, provider, task_id, control, fresh=fresh)
        progress_state = ProgressState()
        fields = self._fields(job, provider=provider.name, task_id=task_id)
        while True:
            if control.canceled.is_set():
                log_event(log, "job.canceled", **fields)
                await self._cancel_task(job, provider, task_id)
                return None
            if control.lost.is_set() or control.stopping.is_set():
                log_event(log, "job.left", **fields, reason="lease lost" if control.lost.is_set() else "shutdown")
                return None
            status = await feed.delivered()
            if status is None and not feed.due():
                if time.time() > deadline:
                    await self._time_out(job, provider, task_id)
                    return None
                await feed.sleep(control)
                continue
            if status is None:
                log_event(log, "status.polled", logging.DEBUG, **fields)
                try:
                    status = await self._poll(provider, task_id)
                except TransientProviderError as exc:
                    if time.time() > deadline:
                        await self._time_out(job, provider, task_id)
                        return None
                    delay = feed.unanswered(functools.partial(self._delay, retry_after=exc.retry_after))
                    log_event(
                        log, "status.poll_failed", logging.WARNING, **fields, delay=round(delay, 3), reason=exc.message
                    )
                    continue
                except PermanentProviderError as exc:
                    # The task is gone (unknown or expired id): submit again later, or give up.
                    await self._give_up(job, [TransientProviderError(exc.message, code=exc.code)])
                    return None
                feed.answered()
            if status.raw_status != raw:
                log_event(log, "status.mapped", **fields, raw=status.raw_status, mapped=status.state.value)
                raw = status.raw_status
                if status.state in (TaskState.QUEUED, TaskState.PROCESSING):
                    # the status first: it clears the progress read with the old one (0032) ...
                    await self._note(job, raw, control)
                    progress_state = ProgressState()
                    if control.interrupted():
                        continue
            # ... then the progress read with this status
            await self._progress(job, status, progress_state)
            if status.state in (TaskState.QUEUED, TaskState.PROCESSING):
                # The deadline bounds the provider's work; a video already made is
                # always delivered, however long Storage kept it waiting.
                if time.time() > deadline:
                    await self._time_out(job, provider, task_id)
                    return None
                continue
            if status.state is TaskState.COMPLETED:
                return status
            if status.state is TaskState.FAILED:
                await self._fail(
                    job,
                    status.error_code or "provider_failed",
                    status.error or "The provider could not make this video.",
                    raw,
                    task=(provider.name, task_id),
                )
            else:
                await self._fail(job, "provider_canceled", PROVIDER_CANCELED, raw, task=(provider.name, task_id))
            return None

    def _feed(self, job: Job, provider: Provider, task_id: str, control: JobControl, *, fresh: bool) -> StatusFeed:
        if not self._webhooks(provider.name):
            return StatusFeed(provider, provider.poll_interval)
        read = functools.partial(self._delivered, job, provider, task_id, control)
        return WebhookFeed(provider, self.settings.fal_webhook_poll_seconds, fresh=fresh, read=read)

    async def _delivered(
        self, job: Job, provider: Provider, task_id: str, control: JobControl
    ) -> tuple[bool, TaskStatus | None]:
        """Whether the task's webhook delivery arrived, and the status it gives (a read, no HTTP)."""
        control.delivered.clear()
        delivery = await self.db.delivery(job.id)
        if delivery is None or delivery["request_id"] != task_id or delivery["provider"] != provider.name:
            return False, None
        status = provider.from_delivery(delivery["body"])
        if status is not None:
            log_event(
                log,
                "webhook.used",
                **self._fields(job, provider=provider.name, task_id=task_id, state=status.state.value),
            )
        return True, status

    async def _progress(self, job: Job, status: TaskStatus, state: ProgressState) -> None:
        """Record the provider's progress and queue position when they change, at most once a second."""
        if status.state not in (TaskState.QUEUED, TaskState.PROCESSING):
            return
        value = (status.progress, status.queue_position)
        now = time.monotonic()
        if value == state.written or now - state.at < PROGRESS_INTERVAL_SECONDS:
            return
        state.written, state.at = value, now
        with contextlib.suppress(Conflict):
            await self.db.update_progress(job.id, self.worker_id, *value)

    async def _time_out(self, job: Job, provider: Provider, task_id: str) -> None:
        await self._cancel_task(job, provider, task_id)
        await self._fail(job, "timed_out", TIMED_OUT, task=(provider.name, task_id))

    async def _note(self, job: Job, raw: str, control: JobControl) -> None:
        """Record a raw provider status change (it lands in the timeline)."""
        try:
            await self.db.update_status(job.id, "processing", worker_id=self.worker_id, provider_status=raw)
        except Conflict:
            # Canceled by the user, or taken over by another worker: find out which.
            states = await self.db.renew(self.worker_id, [job.id], self.settings.worker_lease_seconds)
            if any(s.status == "canceled" for s in states):
                control.canceled.set()
            else:
                control.lost.set()
