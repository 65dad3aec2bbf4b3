"""The worker loop: claim, run many jobs at once, renew leases, stop cleanly.

One asyncio process runs up to `worker_concurrency` jobs, claimed in batches; the
leases it holds are renewed every lease/5 s (a canceled job or a lost lease is
signalled to its job). SIGTERM or SIGINT stops claiming, lets each job reach a safe
point (a poll wait; never mid-submission or mid-upload) within the grace period, and
hands every lease back so another worker continues at once.

A BaseException that is not an Exception in a job (the process is dying) ends
the worker at once without handing leases back: the leases then expire, as after
a SIGKILL, and another worker resumes the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import LiteralString

import psycopg

from vidanim.jobs import Job
from vidanim.logs import log_event
from vidanim.settings import Settings
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.pipeline import JobControl, JobPipeline

log = logging.getLogger("vidanim.worker")

LISTEN: LiteralString = "listen vidanim_jobs"
# a webhook delivery was recorded for a job (payload: its id): wake it where it runs
LISTEN_DELIVERIES: LiteralString = "listen vidanim_deliveries"
# A job due later than this is left to the periodic claim rather than to a timer.
MAX_TIMER_SECONDS = 3600.0
# How long an armed wake-up lasts (0042), and how old it may get before the worker renews it.
ARM_SECONDS = 60
REARM_AFTER_SECONDS = 20.0


@dataclass
class WorkerStats:
    claimed: int = 0
    finished: int = 0
    crashed: int = 0
    #: the most recent jobs this worker took up (bounded: a worker runs for months)
    job_ids: deque[uuid.UUID] = field(default_factory=lambda: deque(maxlen=10_000))


class Worker:
    def __init__(self, *, settings: Settings, db: ServiceDatabase, pipeline: JobPipeline):
        self.settings = settings
        self.db = db
        self.pipeline = pipeline
        self.worker_id = settings.worker_id
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._running: dict[uuid.UUID, tuple[asyncio.Task[None], JobControl]] = {}
        self._fatal: BaseException | None = None
        # jobs running when the stop began: their leases are handed back at the end
        self._to_release: set[uuid.UUID] = set()
        # set by a NOTIFY (or its timer) that a job is due: the idle claim loop wakes at once
        self._wake = asyncio.Event()
        self._wake_timer: asyncio.TimerHandle | None = None
        # LISTEN is up; and when (monotonic) this worker last armed its wake-up, None: disarmed
        self._listening = False
        self._armed_at: float | None = None
        self._job_notifies = 0  # NOTIFYs on vidanim_jobs received: one during an arm undoes it

    def stop(self) -> None:
        """Stop claiming and wind down (what SIGTERM does)."""
        if not self._stopping.is_set():
            log_event(log, "worker.stopping", worker_id=self.worker_id, running=len(self._running))
        self._stopping.set()
        self._to_release |= set(self._running)
        for _, control in self._running.values():
            control.stopping.set()

    async def run(self, *, until_idle: bool = False, install_signals: bool = True) -> WorkerStats:
        """Work until stopped (or, with `until_idle`, until nothing is due or running)."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        log_event(
            log,
            "worker.started",
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.settings.worker_concurrency,
        )
        try:
            for provider, cap in self.settings.provider_max_in_flight.items():
                await self.db.set_provider_limit(provider, cap)
        except Exception as exc:  # a bad provider name is refused by the database: say so, go on
            log_event(log, "worker.limits_failed", logging.ERROR, worker_id=self.worker_id, error=str(exc))
        try:
            # New credentials may have come with this start: probe providers whose breakers
            # opened for an account fault at once, so the jobs waiting for them run.
            if rechecked := await self.db.recheck_breakers():
                log_event(log, "worker.breakers_rechecked", logging.WARNING, worker_id=self.worker_id, count=rechecked)
        except Exception as exc:  # the database is away: the claim loop reports it
            log_event(log, "worker.recheck_failed", logging.WARNING, worker_id=self.worker_id, error=str(exc))
        renewer = asyncio.create_task(self._renew_forever())
        listener = asyncio.create_task(self._listen_forever()) if self.settings.worker_listen else None
        pruner = (
            asyncio.create_task(self._prune_forever())
            if self.settings.worker_prune_older_than_days is not None
            else None
        )
        try:
            await self._claim_loop(until_idle)
        finally:
            for task in (renewer, listener, pruner):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if listener is not None:
                await self._disarm()
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise self._fatal
        await self._wind_down()
        log_event(log, "worker.stopped", worker_id=self.worker_id, finished=self.stats.finished)
        return self.stats

    async def _claim_loop(self, until_idle: bool) -> None:
        while not self._stopping.is_set() and self._fatal is None:
            free = self.settings.worker_concurrency - len(self._running)
            jobs: list[Job] = []
            if free > 0:
                self._wake.clear()  # a NOTIFY during the claim sets it again: none is lost
                await self._arm()  # before the claim: a job committed after it wakes us, one before is claimed
                try:
                    jobs = await self.db.claim(
                        self.worker_id, min(free, self.settings.worker_claim_batch), self.settings.worker_lease_seconds
                    )
                except Exception as exc:  # the database is away: keep trying, don't die
                    log_event(log, "worker.claim_failed", logging.ERROR, worker_id=self.worker_id, error=str(exc))
                for job in jobs:
                    self._start(job)
            if jobs and len(self._running) < self.settings.worker_concurrency:
                continue
            if until_idle and not jobs and not self._running:
                return
            self._slot_free.clear()
            waiters = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())]
            if len(self._running) >= self.settings.worker_concurrency:
                waiters.append(asyncio.ensure_future(self._slot_free.wait()))
            timeout = self.settings.worker_idle_poll_seconds
            if until_idle and self._running:
                waiters.append(asyncio.ensure_future(self._slot_free.wait()))
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def _arm(self) -> None:
        """Ask to be woken by the next claimable job (0042), unless armed recently and not woken since."""
        if not self._listening:
            return
        now = time.monotonic()
        if self._armed_at is not None and now - self._armed_at < REARM_AFTER_SECONDS:
            return
        seen = self._job_notifies
        try:
            await self.db.arm_wakeups(self.worker_id, ARM_SECONDS)
            if self._job_notifies == seen:
                self._armed_at = now
        except Exception as exc:  # the periodic claim carries on meanwhile
            log_event(log, "worker.arm_failed", logging.WARNING, worker_id=self.worker_id, error=str(exc))

    async def _disarm(self) -> None:
        self._armed_at = None
        with contextlib.suppress(Exception):  # best effort: an armed row expires on its own
            await self.db.disarm_wakeups(self.worker_id)

    async def _listen_forever(self) -> None:
        """LISTEN for due jobs on a connection of its own; reconnect after a failure."""
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.require_database_url(), autocommit=True
                ) as conn:
                    await conn.execute(LISTEN_DELIVERIES)
                    await conn.execute(LISTEN)  # last: its text in pg_stat_activity says the worker listens
                    failures = 0
                    self._listening = True
                    self._armed_at = None  # arm at the next claim
                    self._wake.set()  # anything that fell due while not listening
                    async for notify in conn.notifies():
                        if notify.channel == "vidanim_deliveries":
                            self._delivered(notify.payload)
                        else:
                            self._armed_at = None  # the job that sent it disarmed us (0042)
                            self._job_notifies += 1
                            self._due_at(notify.payload)
            except asyncio.CancelledError:
                self._listening = False
                raise
            except Exception as exc:  # the periodic claim carries on meanwhile
                self._listening = False
                failures += 1
                log_event(log, "worker.listen_failed", logging.WARNING, worker_id=self.worker_id, error=str(exc))
                await asyncio.sleep(min(2.0**failures, 60.0))

    def _delivered(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.delivered(uuid.UUID(payload))

    def delivered(self, job_id: uuid.UUID) -> None:
        """A webhook delivery for `job_id` was recorded: wake the job if this worker runs it."""
        entry = self._running.get(job_id)
        if entry is not None:
            entry[1].delivered.set()

    def _due_at(self, payload: str) -> None:
        """Wake now for a job due now; set a timer for one due later (the earliest wins)."""
        loop = asyncio.get_running_loop()
        try:
            delay = float(payload) - time.time()
        except ValueError:
            delay = 0.0
        if delay <= 0:
            self._wake.set()
            return
        if delay > MAX_TIMER_SECONDS:
            return  # the periodic claim will find it
        due = loop.time() + delay
        timer = self._wake_timer
        # A handle that has fired is not "cancelled": only one still to come can be the earlier.
        if timer is not None and not timer.cancelled() and loop.time() < timer.when() <= due:
            return
        if timer is not None and timer.when() > due:
            timer.cancel()
        self._wake_timer = loop.call_at(due, self._wake.set)

    def _start(self, job: Job) -> None:
        control = JobControl()
        if self._stopping.is_set():
            control.stopping.set()
        task = asyncio.create_task(self._guarded(job, control), name=f"job-{job.id}")
        self._running[job.id] = (task, control)
        self.stats.claimed += 1
        self.stats.job_ids.append(job.id)

    async def _guarded(self, job: Job, control: JobControl) -> None:
        try:
            await self.pipeline.run(job, control)
            self.stats.finished += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or an outage in the middle of a job: leave the lease to expire, so
            # the job is retried later by whoever holds it then; never lose it.
            self.stats.crashed += 1
            self._to_release.discard(job.id)
            log_event(
                log,
                "job.error",
                logging.ERROR,
                job_id=str(job.id),
                user_id=str(job.user_id),
                worker_id=self.worker_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            control.lost.set()
        except BaseException as exc:
            self._fatal = exc
            self._stopping.set()
        finally:
            self._running.pop(job.id, None)
            self._slot_free.set()

    async def _prune_forever(self) -> None:
        """Prune old ended jobs (0041) at start and every worker_prune_every_seconds, batch by batch."""
        days = self.settings.worker_prune_older_than_days
        assert days is not None
        while True:
            total_jobs = total_events = 0
            try:
                while True:
                    jobs, events = await self.db.prune_batch(
                        timedelta(days=days), self.settings.worker_prune_batch_size
                    )
                    total_jobs, total_events = total_jobs + jobs, total_events + events
                    if jobs == 0:
                        break
                    await asyncio.sleep(0)  # each batch committed; let the jobs run between batches
            except Exception as exc:  # the database is away: try again next time
                log_event(log, "worker.prune_failed", logging.WARNING, worker_id=self.worker_id, error=str(exc))
            if total_jobs:
                log_event(log, "worker.pruned", worker_id=self.worker_id, jobs=total_jobs, events=total_events)
            await asyncio.sleep(self.settings.worker_prune_every_seconds)

    async def _renew_forever(self) -> None:
        every = max(self.settings.worker_lease_seconds / 5, 0.2)
        while True:
            await asyncio.sleep(every)
            await self.renew_once()

    async def renew_once(self) -> None:
        ids = list(self._running)
        if not ids:
            return
        try:
            states = await self.db.renew(self.worker_id, ids, self.settings.worker_lease_seconds)
        except Exception as exc:
            log_event(log, "worker.renew_failed", logging.ERROR, worker_id=self.worker_id, error=str(exc))
            return
        for state in states:
            entry = self._running.get(state.job_id)
            if entry is None:
                continue
            control = entry[1]
            if state.status == "canceled":
                control.canceled.set()
            elif not state.held:
                control.lost.set()

    async def _wind_down(self) -> None:
        if self._running:
            tasks = [t for t, _ in self._running.values()]
            _, pending = await asyncio.wait(tasks, timeout=self.settings.worker_shutdown_grace_seconds)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        leftover = list(self._to_release | set(self._running))
        self._running.clear()
        if leftover:
            released = await self.db.release(self.worker_id, leftover)
            log_event(log, "worker.released", worker_id=self.worker_id, released=released)
