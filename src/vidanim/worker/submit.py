"""The submission itself: a queued job's input signed, sent to the providers the gate allows, the task recorded.

The input image is looked at again (the user may have replaced it), signed, and
sent to each provider of the gate's plan in order, each `submit_attempts` times
for a transient error. The submission's webhook URL carries a fresh token issued
under the lease. The task is recorded *before the first poll*; when the job moved
on meanwhile (lease lost, canceled, adopted another task) the new task is canceled.
An image a provider refused goes on only to providers whose documented limits take it.
"""

from __future__ import annotations

import logging
import time

import httpx

from vidanim.errors import Conflict
from vidanim.images import PROVIDER_RULES, probe_size
from vidanim.jobs import Job
from vidanim.logs import log_event
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
from vidanim.storage.base import StorageError
from vidanim.webhooks.fal import new_token, token_hash
from vidanim.worker.control import JobControl, Stage, StageContext, Wait
from vidanim.worker.gate import BudgetReached, ProviderBusy, SubmissionGate
from vidanim.worker.metrics import outcome_of

log = logging.getLogger("vidanim.worker")

INPUT_BUCKET = "video-inputs"
INPUT_MISSING = "The input image is no longer available; upload it again and make a new request."
# Bytes of the input image read to learn its size in pixels after a provider refused it.
IMAGE_HEAD_BYTES = 64 * 1024


class Submitter(Stage):
    """From a queued job to a recorded task at one provider, through the gate."""

    def __init__(self, context: StageContext, gate: SubmissionGate):
        super().__init__(context)
        self.gate = gate

    async def submit(self, job: Job, control: JobControl) -> Submission | None:
        """Submit the job once; the task recorded, or None when the job waits, failed or moved on."""
        verdict = self.gate.admit(job)
        if verdict is not None:
            await self._settle(job, verdict)
            return None
        # The user may have replaced the object since the request: look again before signing.
        check = await self.db.check_input(job.id)
        if not check.present:
            await self._fail(job, "input_missing", INPUT_MISSING)
            return None
        if check.problem is not None:
            await self._fail(job, "input_changed", check.problem)
            return None
        probe = await self._storage_gate(job)
        if probe is None:
            return None
        try:
            image = await self.storage.sign(INPUT_BUCKET, job.input_image_path, self.settings.input_url_expiry_seconds)
        except StorageError as exc:
            if exc.status == 404:
                await self._fail(job, "input_missing", INPUT_MISSING)
            else:  # Storage refusing our key, or down: not the user's doing, so the job waits
                await self._storage_fault(job, exc, self._fields(job, path=f"{INPUT_BUCKET}/{job.input_image_path}"))
            return None
        if probe:
            await self._storage_answered(job)
        plan = await self.gate.plan(job)
        if isinstance(plan, Wait):
            await self._settle(job, plan)
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
                    await self._settle(job, self.gate.budget_wait())
                    return None
                except SubmissionUncertain as exc:
                    # Perhaps a paid task runs now: never send the same job again at once.
                    await self.gate.uncertain(job, name, exc)
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
                        await self.gate.trip(job, name, "outage", exc.message)
                    continue
                except OperatorFault as exc:
                    errors.append(exc)
                    await self.gate.trip(job, name, exc.kind, exc.message)
                    break
                except InputRefused as exc:
                    # The image itself: another provider gets it (or is waited for, when at its
                    # cap) only if its documented limits take it; with none left, the gate's
                    # GiveUp fails the job with this message.
                    await self.gate.healthy(job, name, probing)
                    later = [n for n, _ in plan[index + 1 :]]
                    accepting = await self._providers_accepting(job, image.url, later + busy)
                    log_event(
                        log,
                        "provider.input_refused",
                        logging.WARNING,
                        **self._fields(job, provider=name, reason=exc.reason, fallback=",".join(accepting) or None),
                    )
                    skip.update(set(later) - set(accepting))
                    busy = [n for n in busy if n in accepting]  # waited for only if it would take the image
                    errors.append(exc)
                    break
                except PermanentProviderError as exc:
                    await self.gate.healthy(job, name, probing)
                    errors.append(exc)
                    log_event(
                        log, "provider.refused", logging.WARNING, **self._fields(job, provider=name, reason=exc.message)
                    )
                    break
                await self.gate.healthy(job, name, probing)
                return await self._record(job, provider, submission)
            log_event(log, "provider.fallback", logging.WARNING, **self._fields(job, provider=name))
        await self._settle(job, await self.gate.exhausted(errors, busy))
        return None

    async def _webhook_url(self, job: Job, provider: str) -> str | None:
        """The submission's own webhook URL: a fresh token, issued under the lease (0034)."""
        if not self._webhooks(provider):
            return None
        token = new_token()
        await self.db.issue_webhook_token(
            job.id, self.worker_id, provider, token_hash(token), self.settings.webhook_token_seconds()
        )
        return self.settings.fal_webhook_url(job.id, token)

    async def _paid_submit(self, job: Job, name: str, provider: Provider, image_url: str) -> Submission:
        """Take the provider's slot and reserve the estimated cost (the gate), then submit.

        The reservation raises Conflict unless the job is still queued under this
        worker's lease; it is given back when the submission certainly started nothing,
        kept when its answer was lost (SubmissionUncertain), see SubmissionGate.unreserve.
        """
        webhook_url = await self._webhook_url(job, name)  # PT409 like acquire_slot's when the lease is lost
        cost = await self.gate.reserve(job, name, provider)
        started = time.monotonic()
        try:
            submission = await provider.submit(image_url, job.prompt, job.options, webhook_url=webhook_url)
        except ProviderError as exc:
            self.metrics.observe_call(name, "submit", outcome_of(exc), time.monotonic() - started)
            await self.gate.unreserve(job, name, cost, exc)
            raise
        self.metrics.observe_call(name, "submit", "ok", time.monotonic() - started)
        return submission

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
