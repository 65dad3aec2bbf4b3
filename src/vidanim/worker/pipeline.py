"""One job from lease to stored video: submit once, follow, deliver once.

The job's life as a state machine; each box is a stage (its module), each arrow
out of the line is an outcome the stage reaches through `control.Stage`:

    leased
      |-- queued ---------------------------------------------.
      |                                                       v
      |                                   gate.admit    -- Wait --> queued, due later ("waiting")
      |                                     |           -- Fail --> failed (refund by trigger)
      |                                   submit.Submitter
      |                                     |-- input gone/changed ---------> failed
      |                                     |-- Storage refuses / is down --> queued, due later
      |                                     |-- gate.plan: none usable -----> queued, due later
      |                                     |-- per provider of the plan: slot + budget (gate.reserve),
      |                                     |   submit, retry transient, trip breakers, fall back
      |                                     |-- lost answer (gate.uncertain) -> queued, due later
      |                                     |-- none took it (gate.exhausted)
      |                                     |       -> Wait (busy, providers) | GiveUp -> retry | failed
      |                                     |-- recorded, but the job moved on -> task canceled, left
      |                                     v recorded
      |-- processing (a task recorded) --> follow.TaskFollower  <- StatusFeed: webhook or polls
      |                                     |-- canceled --------------------> task canceled
      |                                     |-- lease lost / worker stopping -> left (another worker resumes)
      |                                     |-- task failed / canceled ------> failed
      |                                     |-- past the deadline -----------> task canceled, failed
      |                                     |-- task gone -------------------> GiveUp -> retry | failed
      |                                     v completed
      |                                   deliver.VideoDelivery
      |                                     |-- bad or too large video ------> failed
      |                                     |-- Storage / output unavailable -> queued, due later (no new task)
      |                                     v
      '-- provider not configured here -> processing, due later   completed

docs/worker.md ("Stages") maps the modules and where each rule lives.
"""

from __future__ import annotations

import logging
import time

import httpx

from vidanim.errors import VidanimError
from vidanim.jobs import Job
from vidanim.logs import log_event
from vidanim.providers.base import Provider
from vidanim.settings import Settings
from vidanim.storage.base import Storage
from vidanim.worker.control import UNAVAILABLE, JobControl, Stage, StageContext
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.deliver import VideoDelivery
from vidanim.worker.follow import TaskFollower
from vidanim.worker.gate import WAIT_FLOOR_SECONDS, SubmissionGate
from vidanim.worker.metrics import WorkerMetrics
from vidanim.worker.submit import Submitter

log = logging.getLogger("vidanim.worker")


class JobPipeline(Stage):
    """Runs one leased job through the stages; the stages share one context (a part replaced here is theirs too)."""

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
        self.gate = SubmissionGate(self.context)
        self.submission = Submitter(self.context, self.gate)
        self.following = TaskFollower(self.context)
        self.delivery = VideoDelivery(self.context)

    async def run(self, job: Job, control: JobControl) -> None:
        log_event(log, "job.leased", **self._fields(job, status=job.status, attempts=job.attempts))
        fresh = job.status == "queued"
        if fresh:
            submission = await self.submission.submit(job, control)
            if submission is None:
                return
            provider, task_id, raw = self.providers[submission.provider], submission.task_id, submission.raw_status
        else:
            assert job.provider_task_id is not None  # a processing job holds its task (0002's check)
            if job.provider not in self.providers:
                await self._unconfigured(job)
                return
            provider, task_id, raw = self.providers[job.provider], job.provider_task_id, job.provider_status or ""
            log_event(log, "job.resumed", **self._fields(job, provider=provider.name, task_id=task_id))
        status = await self.following.follow(job, provider, task_id, raw, control, fresh=fresh)
        if status is not None:
            await self.delivery.deliver(job, provider, task_id, status, control)

    async def _unconfigured(self, job: Job) -> None:
        """Its task runs, paid, at a provider this worker has no key for (workers configured
        differently): leave it to one that has, and tell the operator; past the job's deadline
        no worker followed it in time, and it fails (refunded) rather than stay processing."""
        started = job.started_at.timestamp() if job.started_at else time.time()
        if time.time() > started + self.settings.job_deadline_seconds:
            detail = f"no worker had a key for {job.provider} within the deadline"
            await self._fail(job, "provider_unconfigured", UNAVAILABLE, detail=detail)
            return
        held = {"provider": job.provider, "task_id": job.provider_task_id}
        delay = max(self.settings.breaker_open_seconds, WAIT_FLOOR_SECONDS)
        await self._wait(job, "provider_unconfigured", delay, logging.ERROR, **held)

    async def cancel_orphan(self, provider_name: str, request_id: str, job_id: str) -> None:
        """A task no job holds (an uncertain submission's, reported by webhook): stop it."""
        provider = self.providers.get(provider_name)
        fields = {"job_id": job_id, "worker_id": self.worker_id, "provider": provider_name, "task_id": request_id}
        if provider is None:
            log_event(log, "provider.orphan_left", logging.WARNING, **fields, reason="provider not configured")
            return
        await self._cancel(provider, request_id, fields, "provider.orphan_canceled", logging.WARNING)


__all__ = ["JobControl", "JobPipeline", "VidanimError"]
