"""What an operator reads: Prometheus metrics of this worker and of the whole queue.

Two kinds of series. This worker's own events are counters and histograms
(`prometheus-client`): provider request latency, job outcomes by provider and error
code, submissions per finished job; sum them across workers in PromQL. The state of
the queue, shared by every worker, is read from the database: jobs by status,
queue depth, the oldest queued job's age, waiting jobs by reason, breaker states,
today's committed spend against the cap, leases held. That read is cached: a scrape
within `cache_seconds` of the last read serves its values, and scrapes that arrive
together wait for one read rather than each making their own.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import LiteralString

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vidanim.worker.db import ServiceDatabase

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
STATUSES = ("queued", "processing", "completed", "failed", "canceled")
BREAKER_STATES = ("closed", "open", "half_open")


class WorkerMetrics:
    def __init__(
        self,
        providers: list[str],
        registry: CollectorRegistry | None = None,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ):
        self.providers = providers
        self.cache_seconds = cache_seconds
        self._read_at: float | None = None  # monotonic time of the last database read
        self._reading = asyncio.Lock()
        self.registry = registry or CollectorRegistry()
        r = self.registry
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

    async def refresh(self, db: ServiceDatabase) -> None:
        """Bring the shared gauges up to date: from the last read if it is recent, else one read."""
        if self._fresh():
            return
        async with self._reading:  # one read at a time; who waited for it finds it fresh
            if self._fresh():
                return
            await self._read(db)
            self._read_at = time.monotonic()

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
