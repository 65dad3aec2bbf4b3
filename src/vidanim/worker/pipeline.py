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

import contextlib
import logging
import time
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta

import httpx

from vidanim.errors import Conflict, VidanimError
from vidanim.images import PROVIDER_RULES, probe_size
from vidanim.jobs import Job
from vidanim.logs import log_event
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
    TransientProviderError,
)
from vidanim.settings import Settings
from vidanim.storage.base import Storage, StorageError
from vidanim.webhooks.fal import new_token, token_hash
from vidanim.worker.control import UNAVAILABLE, JobControl, Stage, StageContext
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.deliver import VideoDelivery
from vidanim.worker.follow import TaskFollower
from vidanim.worker.metrics import WorkerMetrics, outcome_of

log = logging.getLogger("vidanim.worker")

INPUT_BUCKET = "video-inputs"
INPUT_MISSING = "The input image is no longer available; upload it again and make a new request."
# The shortest wait of a job no provider can take now.
WAIT_FLOOR_SECONDS = 1.0
# a job waiting for paused submissions looks again this often, in case a resume's wake-up was missed
PAUSED_RECHECK_SECONDS = 60.0
# Bytes of the input image read to learn its size in pixels after a provider refused it.
IMAGE_HEAD_BYTES = 64 * 1024
# Submissions a job may send after one whose answer was lost: one more, then no other.
MAX_UNCERTAIN_SUBMISSIONS = 2


class BudgetReached(Exception):
    """Today's committed spend would pass the daily cap."""


class ProviderBusy(Exception):
    """The provider has as many tasks in flight as its cap allows."""


class JobPipeline(Stage):
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
        order = [p for p in settings.provider_order() if p in providers]
        super().__init__(
            StageContext(
                settings=settings,
                db=db,
                storage=storage,
                providers=providers,
                http=http,
                metrics=metrics or WorkerMetrics(order),
                order=order,
            )
        )
        self.following = TaskFollower(self.context)
        self.delivery = VideoDelivery(self.context)

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
        status = await self.following.follow(job, provider, task_id, raw, control, fresh=fresh)
        if status is not None:
            await self.delivery.deliver(job, provider, task_id, status, control)

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


__all__ = ["JobControl", "JobPipeline", "VidanimError"]
