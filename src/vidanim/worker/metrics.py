"""What an operator reads: Prometheus metrics of this worker and of the whole queue.

Two kinds of series. This worker's own events are counters and histograms
(`prometheus-client`): provider request latency, job outcomes by provider and error
code, submissions per finished job; sum them across workers in PromQL. The state of
the queue, shared by every worker, is read from the database: jobs by status,
queue depth, the oldest queued job's age, waiting jobs by reason, breaker states,
today's committed spend against the cap, leases held. That read is cached: a scrape
within `cache_seconds` of the last read serves its values, and scrapes that arrive
together wait for one read rather than each making their own.

A scrape never waits for the database longer than `read_timeout` (2 s): the read
runs as a task of its own, and a scrape that it outlasts (the database is down,
paused, or unreachable with its packets dropped) serves the last values read, with
`vidanim_metrics_stale` 1 and `vidanim_metrics_age_seconds` saying how old they are.
The read itself gives up after `collect_timeout` (10 s), so the next scrape after
the database's return starts a fresh one; one read runs at a time, however many
scrapes wait on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from datetime import UTC, datetime
from typing import LiteralString

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vidanim.logs import log_event
from vidanim.worker.db import ServiceDatabase
from vidanim.worker.log_limit import LogLimit

log = logging.getLogger("vidanim.worker")

# Active jobs through the claimable index; jobs ended in the last day through
# video_jobs_ended_idx (0040). Neither part reads the history.
JOB_COUNTS: LiteralString = """
    select status, coalesce(waiting_reason, '') as waiting_reason, count(*)::bigint as n,
           count(*) filter (where status = 'queued' and next_attempt_at <= now())::bigint as due,
           extract(epoch from now() - min(created_at) filter (where status = 'queued'))::float8 as oldest_queued,
           count(*) filter (where locked_until > now())::bigint as leased
      from public.video_jobs
     where status in ('queued', 'processing')
     group by 1, 2
    union all
    select status, '', count(*)::bigint, 0, null, 0
      from public.video_jobs
     where status in ('completed', 'failed', 'canceled') and completed_at > now() - interval '1 day'
     group by 1
"""
# Several scrapers (Prometheus replicas, an operator's curl) within this long share one read.
DEFAULT_CACHE_SECONDS = 5.0
# How long a scrape waits for the database before it serves the last values (Prometheus's
# default scrape timeout is 10 s); and how long a read may take before it is given up.
READ_TIMEOUT_SECONDS = 2.0
COLLECT_TIMEOUT_SECONDS = 10.0
STATUSES = ("queued", "processing", "completed", "failed", "canceled")
BREAKER_STATES = ("closed", "open", "half_open")


class WorkerMetrics:
    def __init__(
        self,
        providers: list[str],
        registry: CollectorRegistry | None = None,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        collect_timeout: float = COLLECT_TIMEOUT_SECONDS,
    ):
        self.providers = providers
        self.cache_seconds = cache_seconds
        self.read_timeout = read_timeout
        self.collect_timeout = collect_timeout
        self._created_at = time.monotonic()
        self._read_at: float | None = None  # monotonic time of the last database read that completed
        self._read_task: asyncio.Task[bool] | None = None  # the read under way, at most one
        self._failures = LogLimit()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.age = Gauge(
            "vidanim_metrics_age_seconds",
            "Seconds since the queue, breaker and spend gauges were last read from the database"
            " (since the worker started, before the first read).",
            registry=r,
        )
        self.age.set_function(self._age)
        self.stale = Gauge(
            "vidanim_metrics_stale",
            "1 when this scrape serves older values because the database did not answer in time, else 0.",
            registry=r,
        )
        self.read_failures = Counter(
            "vidanim_metrics_read_failures_total",
            "Reads of the shared state that failed or outlasted their timeout, by reason (error, timeout).",
            ["reason"],
            registry=r,
        )
        self.provider_seconds = Histogram(
            "vidanim_provider_request_seconds",
            "Provider calls made by this worker, by provider, call and outcome.",
            ["provider", "call", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.outcomes = Counter(
            "vidanim_job_outcomes_total",
            "Jobs this worker ended, by provider, final status and error code.",
            ["provider", "status", "error_code"],
            registry=r,
        )
        self.submissions = Histogram(
            "vidanim_job_submissions",
            "Submissions a job took, observed when this worker ended it.",
            buckets=(1, 2, 3, 4, 5, 10),
            registry=r,
        )
        self.jobs = Gauge(
            "vidanim_jobs", "Jobs by status (active ones, and those ended in the last day).", ["status"], registry=r
        )
        self.queue_depth = Gauge("vidanim_queue_depth", "Queued jobs that are due now.", registry=r)
        self.oldest_queued = Gauge(
            "vidanim_oldest_queued_job_age_seconds", "Age of the oldest queued job (0 when none).", registry=r
        )
        self.waiting = Gauge("vidanim_jobs_waiting", "Active jobs waiting, by reason.", ["reason"], registry=r)
        self.leases = Gauge("vidanim_leases_held", "Unexpired job leases, across every worker.", registry=r)
        self.breakers = Gauge(
            "vidanim_provider_breaker_state",
            "1 for each provider's current breaker state.",
            ["provider", "state"],
            registry=r,
        )
        self.spend = Gauge(
            "vidanim_spend_committed_usd", "Today's committed spend (UTC), by provider.", ["provider"], registry=r
        )
        self.cap = Gauge("vidanim_spend_cap_usd", "The daily spend cap (NaN: none).", registry=r)
        self.webhooks = Counter(
            "vidanim_webhook_deliveries_total",
            "Webhook deliveries this worker's endpoint answered, by provider and outcome "
            "(recorded, duplicate, ended, adopted, orphan, unknown_job; refused_401, refused_400, error).",
            ["provider", "outcome"],
            registry=r,
        )
        self.webhook_refusals = Counter(
            "vidanim_webhook_refusals_total",
            "Webhook deliveries this worker's endpoint refused, by provider and reason (bad_token, token_reused,"
            " unsigned, stale, bad_signature, foreign_account, account_unset, shape, too_deep, too_large, ...).",
            ["provider", "reason"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "vidanim_webhook_seconds",
            "Time to verify, record and answer a webhook delivery.",
            ["provider"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )

    def observe_call(self, provider: str, call: str, outcome: str, seconds: float) -> None:
        self.provider_seconds.labels(provider, call, outcome).observe(seconds)

    def observe_webhook(self, provider: str, outcome: str, seconds: float) -> None:
        self.webhooks.labels(provider, outcome).inc()
        self.webhook_seconds.labels(provider).observe(seconds)

    def observe_refusal(self, provider: str, reason: str) -> None:
        self.webhook_refusals.labels(provider, reason).inc()

    def observe_end(self, provider: str | None, status: str, error_code: str | None, submissions: int) -> None:
        self.outcomes.labels(provider or "none", status, error_code or "").inc()
        self.submissions.observe(submissions)

    def _fresh(self) -> bool:
        return self._read_at is not None and time.monotonic() - self._read_at < self.cache_seconds

    def _age(self) -> float:
        return time.monotonic() - (self._read_at if self._read_at is not None else self._created_at)

    async def refresh(self, db: ServiceDatabase) -> None:
        """Bring the shared gauges up to date: from the last read if it is recent, else one read,
        waited for at most `read_timeout`; past that the last values stay, marked stale."""
        if self._fresh():
            self.stale.set(0)
            return
        if self._read_task is None or self._read_task.done():
            # one read at a time: whoever scrapes meanwhile waits for this one
            self._read_task = asyncio.create_task(self._collect(db), name="metrics-read")
        task = self._read_task
        done, _ = await asyncio.wait({task}, timeout=self.read_timeout)
        self.stale.set(0 if done and not task.cancelled() and task.result() else 1)

    async def _collect(self, db: ServiceDatabase) -> bool:
        """One read of the shared state; whether it completed (a failure keeps the last values)."""
        try:
            async with asyncio.timeout(self.collect_timeout):
                await self._read(db)
        except Exception as exc:  # the database is away: the last values stay, marked stale
            reason = "timeout" if isinstance(exc, TimeoutError) else "error"
            self.read_failures.labels(reason).inc()
            if (quiet := self._failures.allow(reason)) is not None:
                log_event(
                    log,
                    "metrics.read_failed",
                    logging.WARNING,
                    reason=reason,
                    error=f"{type(exc).__name__}: {exc}" if reason == "error" else f"over {self.collect_timeout:g} s",
                    age_seconds=round(self._age(), 1),
                    suppressed=quiet,
                )
            return False
        self._read_at = time.monotonic()
        return True

    async def aclose(self) -> None:
        """Give up a read still under way (the worker is stopping)."""
        task, self._read_task = self._read_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await task

    async def _read(self, db: ServiceDatabase) -> None:
        """Read the shared state from the database into the gauges."""
        rows = await db.rows(JOB_COUNTS, ())
        by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
        waiting: dict[str, int] = {}
        due = leased = 0
        oldest = 0.0
        for row in rows:
            by_status[row["status"]] = by_status.get(row["status"], 0) + int(row["n"])
            if row["waiting_reason"] and row["status"] in ("queued", "processing"):
                waiting[row["waiting_reason"]] = waiting.get(row["waiting_reason"], 0) + int(row["n"])
            due += int(row["due"])
            leased += int(row["leased"])
            oldest = max(oldest, float(row["oldest_queued"] or 0.0))
        for status, n in by_status.items():
            self.jobs.labels(status).set(n)
        self.waiting.clear()
        for reason, n in waiting.items():
            self.waiting.labels(reason).set(n)
        self.queue_depth.set(due)
        self.oldest_queued.set(oldest)
        self.leases.set(leased)
        breakers = await db.breakers()
        for provider in self.providers:
            state = breakers[provider].state if provider in breakers else "closed"
            for candidate in BREAKER_STATES:
                self.breakers.labels(provider, candidate).set(1 if candidate == state else 0)
        today = datetime.now(UTC).date()
        self.spend.clear()
        for row in await db.spend(1):
            if row["day"] == today:
                self.spend.labels(row["provider"]).set(float(row["committed_usd"]))
        cap = await db.daily_budget()
        self.cap.set(float(cap) if cap is not None else math.nan)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def outcome_of(exc: BaseException | None) -> str:
    """A provider call's outcome label: ok, transient, refused or operator."""
    from vidanim.providers.base import OperatorFault, PermanentProviderError, TransientProviderError

    if exc is None:
        return "ok"
    if isinstance(exc, OperatorFault):
        return "operator"
    if isinstance(exc, TransientProviderError):
        return "transient"
    if isinstance(exc, PermanentProviderError):
        return "refused"
    return "error"


__all__ = ["WorkerMetrics", "outcome_of"]
