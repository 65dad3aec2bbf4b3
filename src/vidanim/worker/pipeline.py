"""One job from lease to stored video: submit once, follow, deliver once.

queued job     -> sign the input image, submit (fal, then Runway), record the
                  task *before* the first poll; lost lease -> cancel that task
processing job -> resume polling the task already recorded (a dead worker's)
completed task -> stream the video into video-outputs/{user}/{job}.mp4 unless
                  it is already there, then mark the job completed
failures       -> transient: retry with backoff, then schedule a job retry;
                  permanent: fail with a message a user can read (refund by trigger)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from vidanim.errors import Conflict, VidanimError
from vidanim.images import PROVIDER_RULES, probe_size
from vidanim.jobs import Job
from vidanim.logs import log_event, safe_url
from vidanim.pricing import estimate_cost
from vidanim.providers.base import (
    InputRefused,
    LocalFault,
    OperatorFault,
    PermanentProviderError,
    Provider,
    ProviderError,
    Submission,
    SubmissionUncertain,
    TaskState,
    TaskStatus,
    TransientProviderError,
)
from vidanim.settings import Settings
from vidanim.storage.base import ObjectExists, ObjectInfo, Storage, StorageError
from vidanim.webhooks.fal import new_token, token_hash
from vidanim.worker.backoff import backoff_delay
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.metrics import WorkerMetrics, outcome_of
from vidanim.worker.output_hosts import output_hosts
from vidanim.worker.transfer import (
    OUTPUT_BUCKET,
    BadOutput,
    OutputUnavailable,
    OutputUrlExpired,
    TooLarge,
    UploadFailed,
    copy_video,
    too_large,
)

log = logging.getLogger("vidanim.worker")

INPUT_BUCKET = "video-inputs"
UNAVAILABLE = "The video providers are not available right now; the job will not be charged. Please try again later."
TIMED_OUT = "The video took too long to make and was stopped; the job was not charged."
PROVIDER_CANCELED = "The provider stopped working on this video."
INPUT_MISSING = "The input image is no longer available; upload it again and make a new request."
TOO_LARGE = "The video is larger than this service stores."
RETRYING = "The video providers could not take this job just now; it will be tried again shortly."
REFUSED = "The video providers refused this request."
# A job's progress is written at most this often.
PROGRESS_INTERVAL_SECONDS = 1.0
# The shortest wait of a job no provider can take now.
WAIT_FLOOR_SECONDS = 1.0
# a job waiting for paused submissions looks again this often, in case a resume's wake-up was missed
PAUSED_RECHECK_SECONDS = 60.0
# Storage refusals that are the operator's to fix (the key) or ours (the type): jobs wait.
OPERATOR_STORAGE_FAULTS = (401, 403, 415)
# Refusals about the user's own request: their message goes to the user as is.
USER_FAULT_CODES = ("content_moderated", "input_refused")
# Bytes of the input image read to learn its size in pixels after a provider refused it.
IMAGE_HEAD_BYTES = 64 * 1024
# Submissions a job may send after one whose answer was lost: one more, then no other.
MAX_UNCERTAIN_SUBMISSIONS = 2
# Polls slow down by this factor up to twice the provider's cadence.
POLL_GROWTH = 1.25
DELIVERY_ATTEMPTS = 4
# Videos streamed at once per worker; more would only split the bandwidth (and see
# MAX_IN_FLIGHT in providers/base.py for why requests wait on our semaphore).
MAX_DOWNLOADS = 16


@dataclass
class ProgressState:
    """What a job's progress was last written as, and when (monotonic seconds)."""

    written: tuple[int | None, int | None] = (None, None)
    at: float = float("-inf")


class BudgetReached(Exception):
    """Today's committed spend would pass the daily cap."""


class ProviderBusy(Exception):
    """The provider has as many tasks in flight as its cap allows."""


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


class JobPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        db: ServiceDatabase,
        storage: Storage,
        providers: dict[str, Provider],
        http: httpx.AsyncClient,
        metrics: WorkerMetrics | None = None,
    ):
        self.settings = settings
        self.db = db
        self.storage = storage
        self.providers = providers
        self.order = [p for p in settings.provider_order() if p in providers]
        self.http = http
        self.metrics = metrics or WorkerMetrics(self.order)
        self.worker_id = settings.worker_id
        self._downloads = asyncio.Semaphore(MAX_DOWNLOADS)
        self.output_hosts = {name: output_hosts(settings, name) for name in providers}

    def _fields(self, job: Job, **extra: Any) -> dict[str, Any]:
        return {"job_id": str(job.id), "user_id": str(job.user_id), "worker_id": self.worker_id, **extra}

    async def run(self, job: Job, control: JobControl) -> None:
        log_event(log, "job.leased", **self._fields(job, status=job.status, attempts=job.attempts))
        fresh = job.status == "queued"
        if fresh:
            submission = await self._submit(job, control)
            if submission is None:
                return
            provider, task_id, raw = self.providers[submission.provider], submission.task_id, submission.raw_status
        else:
            if job.provider not in self.providers or not job.provider_task_id:
                await self._fail(job, "provider_unconfigured", UNAVAILABLE)
                return
            provider, task_id, raw = self.providers[job.provider], job.provider_task_id, job.provider_status or ""
            log_event(log, "job.resumed", **self._fields(job, provider=provider.name, task_id=task_id))
        await self._follow(job, provider, task_id, raw, control, fresh=fresh)

    # submission -------------------------------------------------------------------
    async def _submit(self, job: Job, control: JobControl) -> Submission | None:
        if job.provider_status == "submission_uncertain" and not await self._may_submit_again(job):
            return None
        # The user may have replaced the object since the request: look again before signing.
        check = await self.db.check_input(job.id)
        if not check.present:
            await self._fail(job, "input_missing", INPUT_MISSING)
            return None
        if check.problem is not None:
            await self._fail(job, "input_changed", check.problem)
            return None
        try:
            image = await self.storage.sign(INPUT_BUCKET, job.input_image_path, self.settings.input_url_expiry_seconds)
        except StorageError as exc:
            if exc.status == 404:
                await self._fail(job, "input_missing", INPUT_MISSING)
            else:  # Storage refusing our key, or down: not the user's doing, so the job waits
                await self._storage_fault(job, exc, self._fields(job, path=f"{INPUT_BUCKET}/{job.input_image_path}"))
            return None
        paused = await self.db.paused(self.order)  # submissions paused by an operator (0051)
        plan = await self._usable_providers(job, paused)
        if not plan:
            if paused:  # a resume wakes the job; the recheck is the fallback
                await self._wait(job, "submissions_paused", PAUSED_RECHECK_SECONDS)
                return None
            await self._wait_for_providers(job)
            return None
        errors: list[ProviderError] = []
        busy: list[str] = []
        skip: set[str] = set()
        for index, (name, probing) in enumerate(plan):
            if name in skip:
                continue
            provider = self.providers[name]
            for attempt in range(self.settings.submit_attempts):
                if control.interrupted():
                    return None
                try:
                    submission = await self._paid_submit(job, name, provider, image.url)
                except Conflict:
                    # Canceled, or the lease ran out, before the provider was called: nothing was sent.
                    log_event(log, "job.left", **self._fields(job, provider=name, reason="the job moved on"))
                    return None
                except BudgetReached:
                    await self._wait_for_budget(job)
                    return None
                except SubmissionUncertain as exc:
                    # Perhaps a paid task runs now: never send the same job again at once.
                    await self._uncertain(job, name, exc)
                    return None
                except ProviderBusy:
                    busy.append(name)
                    log_event(log, "provider.busy", logging.DEBUG, **self._fields(job, provider=name))
                    break
                except TransientProviderError as exc:
                    errors.append(exc)
                    if attempt + 1 < self.settings.submit_attempts:
                        delay = self._delay(attempt, exc.retry_after)
                        log_event(
                            log,
                            "provider.retry",
                            logging.WARNING,
                            **self._fields(
                                job, provider=name, attempt=attempt + 1, delay=round(delay, 3), reason=exc.message
                            ),
                        )
                        await control.wait(delay)
                    elif isinstance(exc, LocalFault):  # this worker's own trouble: the job waits, no breaker opens
                        log_event(
                            log,
                            "worker.local_fault",
                            logging.ERROR,
                            **self._fields(job, provider=name, reason=exc.message),
                        )
                    elif not control.interrupted():  # it outlasted every retry: an outage
                        await self._trip(job, name, "outage", exc.message)
                    continue
                except OperatorFault as exc:
                    errors.append(exc)
                    await self._trip(job, name, exc.kind, exc.message)
                    break
                except InputRefused as exc:
                    # The image itself: another provider gets it only if its documented
                    # limits take it; with none left, _give_up fails the job with this message.
                    await self._healthy(job, name, probing)
                    later = [n for n, _ in plan[index + 1 :]]
                    accepting = await self._providers_accepting(job, image.url, later)
                    log_event(
                        log,
                        "provider.input_refused",
                        logging.WARNING,
                        **self._fields(job, provider=name, reason=exc.reason, fallback=",".join(accepting) or None),
                    )
                    skip.update(set(later) - set(accepting))
                    errors.append(exc)
                    break
                except PermanentProviderError as exc:
                    await self._healthy(job, name, probing)
                    errors.append(exc)
                    log_event(
                        log, "provider.refused", logging.WARNING, **self._fields(job, provider=name, reason=exc.message)
                    )
                    break
                await self._healthy(job, name, probing)
                return await self._record(job, provider, submission)
            log_event(log, "provider.fallback", logging.WARNING, **self._fields(job, provider=name))
        if busy and all(isinstance(e, OperatorFault | TransientProviderError) for e in errors):
            # Every provider that could take the job is at its cap: look again shortly.
            await self._wait(job, "provider_busy", self.settings.provider_busy_wait_seconds)
            return None
        if errors and all(isinstance(e, OperatorFault | TransientProviderError) for e in errors):
            # No provider could take the job, and none of it was the request's fault.
            await self._wait_for_providers(job)
            return None
        await self._give_up(job, errors)
        return None

    # submissions whose answer was lost ---------------------------------------------------
    def _webhooks(self, provider: str | None) -> bool:
        """Whether the provider's tasks report by webhook (fal, with a public URL set)."""
        return provider == "fal" and self.settings.fal_webhooks

    async def _webhook_url(self, job: Job, provider: str) -> str | None:
        """The submission's own webhook URL: a fresh token, issued under the lease (0034)."""
        if not self._webhooks(provider):
            return None
        token = new_token()
        await self.db.issue_webhook_token(
            job.id, self.worker_id, provider, token_hash(token), self.settings.webhook_token_seconds()
        )
        return self.settings.fal_webhook_url(job.id, token)

    async def _uncertain(self, job: Job, provider: str, exc: SubmissionUncertain) -> None:
        """Count it and let the job wait: for the task's webhook (adoption), then one more try.

        With webhooks the wait is long enough for the provider to finish the task it may
        run; without them nothing can name that task, so the job waits a retry's backoff.
        """
        wait = (
            self.settings.uncertain_submission_wait_seconds if self._webhooks(provider) else self._delay(job.attempts)
        )
        log_event(
            log,
            "provider.submission_uncertain",
            logging.WARNING,
            **self._fields(
                job,
                provider=provider,
                reason=exc.message,
                uncertain_submissions=job.uncertain_submissions + 1,
                retry_in=round(wait, 3),
            ),
        )
        with contextlib.suppress(Conflict):
            await self.db.record_uncertain(job.id, self.worker_id, provider, wait)

    async def _may_submit_again(self, job: Job) -> bool:
        """After an uncertain submission: one more submission per job, never a third.

        At the bound the job waits for the webhook of a task it may hold (with webhooks,
        until its deadline), then fails without charge: paying for more tasks nobody can
        see is how a bill runs away.
        """
        if job.uncertain_submissions < MAX_UNCERTAIN_SUBMISSIONS:
            log_event(
                log,
                "provider.submitting_again",
                logging.WARNING,
                **self._fields(job, provider=job.provider, submissions=job.provider_submissions),
            )
            return True
        left = job.created_at.timestamp() + self.settings.job_deadline_seconds - time.time()
        if self._webhooks(job.provider) and left > 0:
            await self._wait(job, "submission_uncertain", min(self.settings.uncertain_submission_wait_seconds, left))
            return False
        await self._fail(job, "submission_uncertain", UNAVAILABLE)
        return False

    # the daily budget ------------------------------------------------------------------
    async def _paid_submit(self, job: Job, name: str, provider: Provider, image_url: str) -> Submission:
        """Reserve the submission's estimated cost under the daily cap, then submit.

        The reservation is the last look at the job before the provider is called: it
        raises Conflict unless the job is still queued under this worker's lease. It is
        given back when the submission certainly started nothing (an HTTP error, a
        connection never made, a request never fully sent), with the quota unit of a job
        canceled meanwhile; only a submission whose answer was lost (SubmissionUncertain)
        may have started a paid task, so its reservation stays (docs/worker.md).
        """
        cost = estimate_cost(
            name,
            getattr(provider, "model", ""),
            job.options,
            self.settings.prices_usd_per_second,
            self.settings.price_unknown_model_usd_per_second,
        )
        webhook_url = await self._webhook_url(job, name)  # PT409 like acquire_slot's when the lease is lost
        if not await self.db.acquire_slot(job.id, self.worker_id, name):
            raise ProviderBusy
        if not await self.db.reserve_spend(job.id, self.worker_id, name, cost):
            raise BudgetReached
        started = time.monotonic()
        try:
            submission = await provider.submit(image_url, job.prompt, job.options, webhook_url=webhook_url)
        except ProviderError as exc:
            self.metrics.observe_call(name, "submit", outcome_of(exc), time.monotonic() - started)
            if not isinstance(exc, SubmissionUncertain):
                await self.db.release_spend(job.id, name, cost)
            raise
        self.metrics.observe_call(name, "submit", "ok", time.monotonic() - started)
        return submission

    async def _wait_for_budget(self, job: Job) -> None:
        """The day's spend is at the cap: wait in queued until the next UTC day (a raised cap wakes it)."""
        now = datetime.now(UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        await self._wait(job, "budget_reached", (midnight - now).total_seconds() + 1)

    # circuit breakers -------------------------------------------------------------------
    async def _usable_providers(self, job: Job, paused: AbstractSet[str] = frozenset()) -> list[tuple[str, bool]]:
        """The providers this job may try, in order, each with whether it probes an open breaker.

        Closed breakers first come in order; the probe of an open one is taken only when
        no provider before it is closed, so a job that will run on a healthy provider
        never holds another provider's one probe slot.
        """
        breakers = await self.db.breakers()
        plan: list[tuple[str, bool]] = []
        for name in (n for n in self.order if n not in paused):
            breaker = breakers.get(name)
            if breaker is None or breaker.state == "closed":
                plan.append((name, False))
            elif not plan and await self.db.begin_probe(name, job.id, self._probe_seconds()):
                log_event(log, "provider.probe", logging.WARNING, **self._fields(job, provider=name, kind=breaker.kind))
                plan.append((name, True))
        return plan

    def _probe_seconds(self) -> float:
        """How long one probe may hold the half-open slot: its submission attempts, with time to spare."""
        return 2 * self.settings.provider_timeout_seconds * max(self.settings.submit_attempts, 1)

    async def _trip(self, job: Job, provider: str, kind: str, reason: str) -> None:
        """An operator's fault at `provider`: open its breaker for every worker; alert once per change."""
        previous, until = await self.db.open_breaker(provider, kind, reason, self.settings.breaker_open_seconds)
        if previous == "closed":
            log_event(
                log,
                "provider.breaker_opened",
                logging.ERROR,
                provider=provider,
                kind=kind,
                reason=reason,
                open_until=until.isoformat(),
                worker_id=self.worker_id,
                job_id=str(job.id),
            )
        elif previous == "half_open":
            log_event(log, "provider.probe_failed", logging.WARNING, **self._fields(job, provider=provider, kind=kind))

    async def _healthy(self, job: Job, provider: str, probing: bool) -> None:
        """The provider answered as a working provider does: a probe closes its breaker."""
        if probing and await self.db.close_breaker(provider):
            log_event(log, "provider.breaker_closed", logging.WARNING, provider=provider, job_id=str(job.id))

    async def _wait_for_providers(self, job: Job) -> None:
        """No provider can take the job now: it waits in queued, no attempt spent, until a breaker is due."""
        breakers = await self.db.breakers()
        mine = [breakers.get(name) for name in self.order]
        now = time.time()
        if any(b is None or b.state != "open" for b in mine):
            # A probe is in flight, or has just closed a breaker: look again in a second (a
            # breaker's closing wakes the jobs already waiting, not one deferred after it).
            delay = WAIT_FLOOR_SECONDS
        else:
            dues = [b.open_until.timestamp() - now for b in mine if b is not None and b.open_until is not None]
            delay = min(max(min(dues, default=self.settings.breaker_open_seconds), WAIT_FLOOR_SECONDS), 86400.0)
        await self._wait(job, "providers_unavailable", delay)

    async def _providers_accepting(self, job: Job, image_url: str, names: list[str]) -> list[str]:
        """Which of `names` document limits this job's image meets; none when unknown."""
        if not names:
            return []
        size = getattr(await self.storage.info(INPUT_BUCKET, job.input_image_path), "size", None)
        dims = probe_size(await self._read_head(image_url))
        if dims is None:
            return []  # cannot tell: do not pay another provider to find out
        return [n for n in names if n in PROVIDER_RULES and PROVIDER_RULES[n].accepts(*dims, size)]

    async def _read_head(self, url: str) -> bytes:
        """The first bytes of an object behind a signed URL: enough for an image header."""
        head = bytearray()
        try:
            async with self.http.stream("GET", url, headers={"Range": f"bytes=0-{IMAGE_HEAD_BYTES - 1}"}) as r:
                if r.status_code >= 400:
                    return b""
                async for chunk in r.aiter_bytes():
                    head += chunk
                    if len(head) >= IMAGE_HEAD_BYTES:
                        break
        except httpx.HTTPError:
            return b""
        return bytes(head[:IMAGE_HEAD_BYTES])

    async def _record(self, job: Job, provider: Provider, submission: Submission) -> Submission | None:
        """Commit provider and task id before the first poll; if we may not, cancel the task."""
        log_event(log, "provider.started", **self._fields(job, provider=provider.name, task_id=submission.task_id))
        outcome = await self.db.record_submission(
            job.id, self.worker_id, provider.name, submission.task_id, submission.raw_status
        )
        if outcome == "held":
            # Its webhook came first and the job adopted it: the worker that claims it finishes it.
            log_event(
                log, "provider.task_adopted", **self._fields(job, provider=provider.name, task_id=submission.task_id)
            )
            return None
        if outcome != "recorded":
            # Lease lost, job canceled or adopted another task meanwhile: this one must not run (or be paid for).
            log_event(
                log,
                "provider.task_orphaned",
                logging.WARNING,
                **self._fields(job, provider=provider.name, task_id=submission.task_id, reason="the job moved on"),
            )
            await self._cancel_task(job, provider, submission.task_id)
            return None
        return submission

    async def cancel_orphan(self, provider_name: str, request_id: str, job_id: str) -> None:
        """A task no job holds (an uncertain submission's, reported by webhook): stop it."""
        provider = self.providers.get(provider_name)
        fields = {"job_id": job_id, "worker_id": self.worker_id, "provider": provider_name, "task_id": request_id}
        if provider is None:
            log_event(log, "provider.orphan_left", logging.WARNING, **fields, reason="provider not configured")
            return
        await self._cancel(provider, request_id, fields, "provider.orphan_canceled", logging.WARNING)

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

    # following a task -----------------------------------------------------------------
    async def _follow(
        self, job: Job, provider: Provider, task_id: str, raw: str, control: JobControl, *, fresh: bool = False
    ) -> None:
        """Follow the task until it ends: from its webhook delivery when one is recorded, else by polling.

        With webhooks a task is polled only every `fal_webhook_poll_seconds` (a lost
        delivery delays the job, never strands it), and not at all right after its
        submission; a recorded delivery wakes the job at once.
        """
        started = job.started_at.timestamp() if job.started_at else time.time()
        deadline = started + self.settings.job_deadline_seconds
        webhooks = self._webhooks(provider.name)
        interval = self.settings.fal_webhook_poll_seconds if webhooks else provider.poll_interval
        next_poll = time.monotonic() + interval if webhooks and fresh else 0.0
        failures = 0
        progress_state = ProgressState()
        fields = self._fields(job, provider=provider.name, task_id=task_id)
        while True:
            if control.canceled.is_set():
                log_event(log, "job.canceled", **fields)
                await self._cancel_task(job, provider, task_id)
                return
            if control.lost.is_set() or control.stopping.is_set():
                log_event(log, "job.left", **fields, reason="lease lost" if control.lost.is_set() else "shutdown")
                return
            status = None
            if webhooks:
                delivered, status = await self._delivered(job, provider, task_id, control)
                if delivered and status is None:
                    next_poll = 0.0  # a delivery without its result (fal's payload_error): fetch it now
            if status is None and time.monotonic() < next_poll:
                if time.time() > deadline:
                    await self._time_out(job, provider, task_id)
                    return
                await control.wait(next_poll - time.monotonic(), delivery=webhooks)
                continue
            if status is None:
                log_event(log, "status.polled", logging.DEBUG, **fields)
                try:
                    status = await self._poll(provider, task_id)
                except TransientProviderError as exc:
                    if time.time() > deadline:
                        await self._time_out(job, provider, task_id)
                        return
                    failures += 1
                    delay = max(interval, self._delay(min(failures - 1, 6), exc.retry_after))
                    log_event(
                        log, "status.poll_failed", logging.WARNING, **fields, delay=round(delay, 3), reason=exc.message
                    )
                    next_poll = time.monotonic() + delay
                    continue
                except PermanentProviderError as exc:
                    # The task is gone (unknown or expired id): submit again later, or give up.
                    await self._give_up(job, [TransientProviderError(exc.message, code=exc.code)])
                    return
                failures = 0
                next_poll = time.monotonic() + interval
                if not webhooks:
                    interval = min(interval * POLL_GROWTH, provider.poll_interval * 2)
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
                    return
                continue
            if status.state is TaskState.COMPLETED:
                await self._deliver(job, provider, task_id, status, control)
            elif status.state is TaskState.FAILED:
                await self._fail(
                    job,
                    status.error_code or "provider_failed",
                    status.error or "The provider could not make this video.",
                    raw,
                    task=(provider.name, task_id),
                )
            else:
                await self._fail(job, "provider_canceled", PROVIDER_CANCELED, raw, task=(provider.name, task_id))
            return

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

    # delivery -----------------------------------------------------------------------
    async def _deliver(
        self, job: Job, provider: Provider, task_id: str, status: TaskStatus, control: JobControl
    ) -> None:
        fields = self._fields(job, provider=provider.name, task_id=task_id, path=f"{OUTPUT_BUCKET}/{job.output_path}")
        try:
            info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
        except StorageError as exc:
            await self._storage_fault(job, exc, fields)
            return
        if info is not None:
            log_event(log, "upload.skipped", **fields, reason="already stored", size=info.size)
        limit = await self.db.bucket_size_limit(OUTPUT_BUCKET)
        max_bytes = min(self.settings.output_max_bytes, limit) if limit else self.settings.output_max_bytes
        attempt = 0
        while info is None:
            log_event(log, "upload.started", **fields, source=safe_url(status.output_url))
            try:
                assert status.output_url is not None
                async with self._downloads:
                    info = await copy_video(
                        self.http,
                        status.output_url,
                        self.storage,
                        job.output_path,
                        max_bytes=max_bytes,
                        hosts=self.output_hosts[provider.name],
                    )
                log_event(log, "upload.completed", **fields, size=info.size)
            except ObjectExists:
                info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
                log_event(log, "upload.skipped", **fields, reason="stored concurrently")
            except BadOutput as exc:
                code = "output_too_large" if isinstance(exc, TooLarge) else "bad_output"
                await self._fail(job, code, str(exc), status.raw_status, task=(provider.name, task_id))
                return
            except UploadFailed as failed:
                refusal = failed.error
                if refusal.status == 413:  # the video itself: over a limit Storage enforces
                    message = str(too_large(failed.expected_size, max_bytes)) if failed.expected_size else TOO_LARGE
                    await self._fail(job, "output_too_large", message, status.raw_status, task=(provider.name, task_id))
                    return
                attempt += 1
                if refusal.status in OPERATOR_STORAGE_FAULTS or attempt >= DELIVERY_ATTEMPTS:
                    await self._storage_fault(job, refusal, fields)
                    return
                # Lost on the way (a dropped connection, a 5xx): perhaps stored all the same.
                try:
                    info = await self._stored_after_error(job, failed.expected_size, fields)
                except StorageError as exc:
                    await self._storage_fault(job, exc, fields)
                    return
                if info is None:
                    log_event(log, "upload.retry", logging.WARNING, **fields, reason=str(refusal))
                    await control.wait(self._delay(attempt - 1))
            except (OutputUrlExpired, OutputUnavailable) as exc:
                attempt += 1
                if attempt >= DELIVERY_ATTEMPTS:
                    # The video is made and paid for: wait and fetch it again later (a fresh
                    # poll hands out a fresh URL), never submit the job a second time.
                    await self._wait(
                        job,
                        "output_unavailable",
                        self.settings.storage_wait_seconds,
                        logging.WARNING,
                        provider=provider.name,
                        task_id=task_id,
                    )
                    return
                log_event(log, "upload.retry", logging.WARNING, **fields, reason=str(exc))
                if isinstance(exc, OutputUnavailable):
                    await control.wait(self._delay(attempt - 1))
                try:
                    # Output URLs expire (Runway: 24-48 h): polling again hands out a fresh one.
                    status = await self._poll(provider, task_id)
                except ProviderError as perr:
                    log_event(log, "status.poll_failed", logging.WARNING, **fields, reason=perr.message)
                    await control.wait(self._delay(attempt - 1))
        try:
            await self.db.update_status(
                job.id,
                "completed",
                worker_id=self.worker_id,
                output_video_path=job.output_path,
                provider_status=status.raw_status,
            )
        except Conflict as exc:
            log_event(log, "job.complete_refused", logging.WARNING, **fields, reason=exc.message)
            return
        log_event(log, "job.completed", **fields)
        self.metrics.observe_end(provider.name, "completed", None, job.attempts)

    async def _stored_after_error(
        self, job: Job, expected_size: int | None, fields: dict[str, Any]
    ) -> ObjectInfo | None:
        """After an upload error: the object, if it is there whole; a partial one is removed."""
        info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
        if info is None:
            return None
        if expected_size is None or info.size == expected_size:
            log_event(log, "upload.completed", **fields, size=info.size, reason="stored despite the error")
            return info
        log_event(log, "upload.partial", logging.WARNING, **fields, size=info.size, expected=expected_size)
        await self.storage.delete(OUTPUT_BUCKET, [job.output_path])
        return None

    async def _storage_fault(self, job: Job, exc: StorageError, fields: dict[str, Any]) -> None:
        """Storage is refusing us (our key, our bug) or is down: the job waits, nobody pays again.

        The job keeps its finished provider task and is due again later; its user sees
        that it waits. 401/403 mean the worker's key; 415 means vidanim sent a type the
        bucket does not take, a bug: both are logged as errors for an operator.
        """
        if exc.status in (401, 403):
            event, level, reason = "storage.refused", logging.ERROR, "Storage refused the worker's key"
        elif exc.status == 415:
            event, level, reason = "storage.refused", logging.ERROR, "Storage refused the video's type: a vidanim bug"
        else:
            event, level, reason = "storage.unavailable", logging.WARNING, "Storage is not available"
        delay = self.settings.storage_wait_seconds
        log_event(log, event, level, **fields, status=exc.status, code=exc.code, reason=reason, retry_in=delay)
        await self._defer(job, "storage_unavailable", delay)

    # helpers -------------------------------------------------------------------------------
    async def _wait(self, job: Job, reason: str, delay: float, level: int = logging.INFO, **extra: Any) -> None:
        """Leave the job to wait `delay` seconds for what is not the user's doing, saying why (a
        `waiting_reason` code); logged as `job.waiting`."""
        log_event(log, "job.waiting", level, **self._fields(job, reason=reason, retry_in=round(delay, 3), **extra))
        await self._defer(job, reason, delay)

    async def _defer(self, job: Job, reason: str, delay: float) -> None:
        with contextlib.suppress(Conflict):  # canceled or taken over meanwhile: nothing to leave
            await self.db.defer(job.id, self.worker_id, delay, reason)

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

    def _delay(self, attempt: int, retry_after: float | None = None) -> float:
        return backoff_delay(
            attempt, base=self.settings.retry_base_seconds, cap=self.settings.retry_cap_seconds, retry_after=retry_after
        )


__all__ = ["JobControl", "JobPipeline", "VidanimError"]
