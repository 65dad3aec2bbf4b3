"""The worker's database access: service-role calls into the SQL API, nothing else.

Every connection of the pool switches to `service_role` once, so the worker has
exactly the rights docs/api.md gives the service role, whatever login it uses (on
Supabase: `postgres` over a session-mode or direct connection).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from vidanim.errors import VidanimError, from_sqlstate
from vidanim.jobs import Job
from vidanim.retention import PRUNE

DB_ATTEMPTS = 4
SET_SERVICE_ROLE: LiteralString = "set role service_role"
CLAIM: LiteralString = "select * from public.claim_video_jobs(%s, %s, %s)"
RENEW: LiteralString = "select * from public.renew_video_job_leases(%s, %s, %s)"
RELEASE: LiteralString = "select public.release_video_jobs(%s, %s) as released"
RETRY: LiteralString = "select * from public.schedule_video_job_retry(%s, %s, %s, %s, %s)"
DEFER: LiteralString = "select * from public.defer_video_job(%s, %s, %s, %s)"
PROGRESS: LiteralString = "select public.service_update_video_job_progress(%s, %s, %s, %s) as changed"
BREAKERS: LiteralString = "select * from public.get_video_provider_breakers()"
PAUSES: LiteralString = "select scope from public.get_video_submission_pauses()"
OPEN_BREAKER: LiteralString = "select * from public.open_video_provider_breaker(%s, %s, %s, %s)"
BEGIN_PROBE: LiteralString = "select public.begin_video_provider_probe(%s, %s, %s) as probing"
CLOSE_BREAKER: LiteralString = "select public.close_video_provider_breaker(%s) as closed"
RECHECK_BREAKERS: LiteralString = "select public.recheck_video_provider_breakers() as rechecked"
ACQUIRE_SLOT: LiteralString = "select public.acquire_video_provider_slot(%s, %s, %s) as acquired"
SET_PROVIDER_LIMIT: LiteralString = "select public.set_video_provider_limit(%s, %s)"
SPEND: LiteralString = "select * from public.get_video_spend(%s)"
DAILY_BUDGET: LiteralString = "select public.get_video_daily_budget() as cap"
RESERVE_SPEND: LiteralString = "select * from public.reserve_video_spend(%s, %s, %s, %s)"
RELEASE_SPEND: LiteralString = "select public.release_video_spend(%s, %s, %s)"
RECORD_SUBMISSION: LiteralString = "select public.record_video_job_submission(%s, %s, %s, %s, %s) as outcome"
RECORD_UNCERTAIN: LiteralString = "select * from public.record_uncertain_video_job_submission(%s, %s, %s, %s)"
RECORD_DELIVERY: LiteralString = "select public.record_video_provider_delivery(%s, %s, %s, %s, %s) as outcome"
RECORD_TOKENED_DELIVERY: LiteralString = (
    "select public.record_video_provider_delivery(%s, %s, %s, %s, %s, %s) as outcome"
)
DELIVERY: LiteralString = "select * from public.get_video_provider_delivery(%s)"
NOTE_ERROR_DETAIL: LiteralString = "select public.note_video_job_error_detail(%s, %s)"
INTERNALS: LiteralString = "select * from public.get_video_job_internals(%s)"
ARM_WAKEUPS: LiteralString = "select public.arm_video_job_wakeups(%s, %s)"
DISARM_WAKEUPS: LiteralString = "select public.disarm_video_job_wakeups(%s)"
CHECK_INPUT: LiteralString = "select * from public.check_video_job_input(%s)"
ISSUE_WEBHOOK_TOKEN: LiteralString = "select public.issue_video_webhook_token(%s, %s, %s, %s, %s) as expires_at"  # noqa: S105 (SQL, not a secret)
WEBHOOK_TOKEN_VALID: LiteralString = "select public.video_webhook_token_valid(%s, %s) as valid"  # noqa: S105 (SQL, not a secret)
# service_role reads bucket settings (it bypasses RLS, as on Supabase)
BUCKET_SIZE_LIMIT: LiteralString = "select file_size_limit from storage.buckets where id = %s"
UPDATE_STATUS: LiteralString = """
    select * from public.service_update_video_job_status(
        p_job_id => %(job_id)s, p_status => %(status)s, p_provider => %(provider)s,
        p_provider_task_id => %(provider_task_id)s, p_provider_status => %(provider_status)s,
        p_output_video_path => %(output_video_path)s, p_error_code => %(error_code)s,
        p_error_message => %(error_message)s, p_worker_id => %(worker_id)s)
"""


@dataclass(frozen=True)
class Breaker:
    provider: str
    state: str  # closed | open | half_open
    kind: str | None
    reason: str | None
    open_until: datetime | None
    probe_until: datetime | None = None


@dataclass(frozen=True)
class InputCheck:
    """The job's input image as `storage.objects` has it now."""

    present: bool
    size_bytes: int | None
    mimetype: str | None
    #: why it may not be submitted, written for the user; None when it may
    problem: str | None


@dataclass(frozen=True)
class LeaseState:
    job_id: uuid.UUID
    status: str
    held: bool


async def _as_service_role(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(SET_SERVICE_ROLE)


def open_pool(dsn: str, *, size: int = 10) -> AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]]:
    """A pool whose connections act as service_role (open it with `await pool.open()`)."""
    return AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_as_service_role,
        open=False,
        timeout=60.0,
    )


class ServiceDatabase:
    def __init__(self, pool: AsyncConnectionPool[Any]):
        self.pool = pool

    async def _rows(self, query: LiteralString, params: Sequence[Any] | dict[str, Any]) -> list[dict[str, Any]]:
        for attempt in range(DB_ATTEMPTS):
            try:
                async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(query, params)
                    rows: list[dict[str, Any]] = await cur.fetchall()
                    return rows
            except (PoolTimeout, psycopg.OperationalError):
                # A busy pool or a dropped connection: every call here is safe to repeat
                # (status updates are idempotent, a lost claim's lease simply expires).
                if attempt + 1 == DB_ATTEMPTS:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
            except psycopg.Error as exc:
                if exc.sqlstate is None:
                    raise
                raise from_sqlstate(
                    exc.sqlstate,
                    exc.diag.message_primary or str(exc),
                    detail=exc.diag.message_detail,
                    hint=exc.diag.message_hint,
                ) from exc
        raise AssertionError("unreachable")

    async def rows(self, query: LiteralString, params: Sequence[Any]) -> list[dict[str, Any]]:
        """A read of the shared state (metrics, health), as the service role."""
        return await self._rows(query, params)

    async def arm_wakeups(self, worker_id: str, seconds: int) -> None:
        """This worker listens and will claim on the next claimable job's NOTIFY (0042)."""
        await self._rows(ARM_WAKEUPS, (worker_id, seconds))

    async def disarm_wakeups(self, worker_id: str) -> None:
        await self._rows(DISARM_WAKEUPS, (worker_id,))

    async def prune_batch(self, older_than: timedelta, batch_size: int) -> tuple[int, int]:
        """Delete one batch of ended jobs older than `older_than` (0041): (jobs, events)."""
        (row,) = await self._rows(PRUNE, (older_than, batch_size))
        return int(row["jobs"]), int(row["events"])

    async def acquire_slot(self, job_id: uuid.UUID, worker_id: str, provider: str) -> bool:
        (row,) = await self._rows(ACQUIRE_SLOT, (job_id, worker_id, provider))
        return bool(row["acquired"])

    async def set_provider_limit(self, provider: str, max_in_flight: int | None) -> None:
        await self._rows(SET_PROVIDER_LIMIT, (provider, max_in_flight))

    async def spend(self, days: int) -> list[dict[str, Any]]:
        return await self._rows(SPEND, (days,))

    async def daily_budget(self) -> Decimal | None:
        (row,) = await self._rows(DAILY_BUDGET, ())
        cap = row["cap"]
        return Decimal(cap) if cap is not None else None

    async def claim(self, worker_id: str, limit: int, lease_seconds: int) -> list[Job]:
        return [Job.from_row(r) for r in await self._rows(CLAIM, (worker_id, limit, lease_seconds))]

    async def renew(self, worker_id: str, job_ids: list[uuid.UUID], lease_seconds: int) -> list[LeaseState]:
        rows = await self._rows(RENEW, (worker_id, job_ids, lease_seconds))
        return [LeaseState(r["job_id"], r["status"], r["lease_held"]) for r in rows]

    async def release(self, worker_id: str, job_ids: list[uuid.UUID]) -> int:
        rows = await self._rows(RELEASE, (worker_id, job_ids))
        return int(rows[0]["released"])

    async def schedule_retry(
        self, job_id: uuid.UUID, worker_id: str, delay: float, error_code: str | None, error_message: str | None
    ) -> Job:
        (row,) = await self._rows(RETRY, (job_id, worker_id, delay, error_code, error_message))
        return Job.from_row(row)

    async def update_progress(
        self, job_id: uuid.UUID, worker_id: str, progress: int | None, queue_position: int | None
    ) -> bool:
        (row,) = await self._rows(PROGRESS, (job_id, worker_id, progress, queue_position))
        return bool(row["changed"])

    async def defer(self, job_id: uuid.UUID, worker_id: str, delay: float, reason: str) -> Job:
        (row,) = await self._rows(DEFER, (job_id, worker_id, delay, reason))
        return Job.from_row(row)

    async def record_submission(
        self, job_id: uuid.UUID, worker_id: str, provider: str, task_id: str, raw_status: str
    ) -> str:
        """Count an accepted submission: 'recorded' (the job's task now), 'held' (it already was,
        by webhook adoption) or 'refused' (the job moved on: cancel the task)."""
        (row,) = await self._rows(RECORD_SUBMISSION, (job_id, worker_id, provider, task_id, raw_status))
        return str(row["outcome"])

    async def record_uncertain(self, job_id: uuid.UUID, worker_id: str, provider: str, wait: float) -> Job:
        """Count a submission whose answer was lost; the job waits `wait` seconds for its task to be named."""
        (row,) = await self._rows(RECORD_UNCERTAIN, (job_id, worker_id, provider, wait))
        return Job.from_row(row)

    async def record_delivery(
        self, job_id: uuid.UUID, provider: str, request_id: str, status: str, body: dict[str, Any]
    ) -> str:
        """Record a verified webhook delivery; its outcome (see migration 0031)."""
        (row,) = await self._rows(RECORD_DELIVERY, (job_id, provider, request_id, status, Jsonb(body)))
        return str(row["outcome"])

    async def record_tokened_delivery(
        self, job_id: uuid.UUID, provider: str, request_id: str, status: str, body: dict[str, Any], token_hash: bytes
    ) -> str:
        """Record a verified delivery that came with a URL token (0034): the outcome, or 'refused_token'
        when the token is not the job's, has expired, or reported another request."""
        (row,) = await self._rows(
            RECORD_TOKENED_DELIVERY, (job_id, provider, request_id, status, Jsonb(body), token_hash)
        )
        return str(row["outcome"])

    async def issue_webhook_token(
        self, job_id: uuid.UUID, worker_id: str, provider: str, token_hash: bytes, ttl: float
    ) -> datetime:
        """Record a submission's URL token (its SHA-256) for the queued job the worker holds; its expiry."""
        (row,) = await self._rows(ISSUE_WEBHOOK_TOKEN, (job_id, worker_id, provider, token_hash, ttl))
        expires: datetime = row["expires_at"]
        return expires

    async def webhook_token_valid(self, job_id: uuid.UUID, token_hash: bytes) -> bool:
        """Whether the token (its SHA-256) is an unexpired one issued for the job: one index lookup."""
        (row,) = await self._rows(WEBHOOK_TOKEN_VALID, (job_id, token_hash))
        return bool(row["valid"])

    async def delivery(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The recorded delivery for the task the job holds now, if one arrived."""
        rows = await self._rows(DELIVERY, (job_id,))
        return rows[0] if rows else None

    async def paused(self, providers: Sequence[str]) -> set[str]:
        """Which of `providers` have their submissions paused now (0051: one provider, or 'all')."""
        scopes = {r["scope"] for r in await self._rows(PAUSES, ())}
        return set(providers) if "all" in scopes else scopes & set(providers)

    async def breakers(self) -> dict[str, Breaker]:
        rows = await self._rows(BREAKERS, ())
        return {
            r["provider"]: Breaker(r["provider"], r["state"], r["kind"], r["reason"], r["open_until"], r["probe_until"])
            for r in rows
        }

    async def open_breaker(self, provider: str, kind: str, reason: str, seconds: float) -> tuple[str, datetime]:
        """Open (or keep open) a provider's breaker; its previous state and its open-until time."""
        (row,) = await self._rows(OPEN_BREAKER, (provider, kind, reason, seconds))
        return str(row["previous_state"]), row["open_until"]

    async def begin_probe(self, provider: str, job_id: uuid.UUID, seconds: float) -> bool:
        (row,) = await self._rows(BEGIN_PROBE, (provider, job_id, seconds))
        return bool(row["probing"])

    async def close_breaker(self, provider: str) -> bool:
        (row,) = await self._rows(CLOSE_BREAKER, (provider,))
        return bool(row["closed"])

    async def recheck_breakers(self) -> int:
        (row,) = await self._rows(RECHECK_BREAKERS, ())
        return int(row["rechecked"])

    async def reserve_spend(self, job_id: uuid.UUID, worker_id: str, provider: str, cost: Decimal) -> bool:
        """Reserve a submission's estimated cost under the daily cap; False at the cap."""
        (row,) = await self._rows(RESERVE_SPEND, (job_id, worker_id, provider, cost))
        return bool(row["reserved"])

    async def release_spend(self, job_id: uuid.UUID, provider: str, cost: Decimal) -> None:
        await self._rows(RELEASE_SPEND, (job_id, provider, cost))

    async def note_error_detail(self, job_id: uuid.UUID, detail: str | None) -> None:
        """The operator's detail of the job's last error (its user reads only error_message)."""
        if detail:
            await self._rows(NOTE_ERROR_DETAIL, (job_id, detail))

    async def internals(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        """What the worker knows of a job besides its row: slot, cost estimate, error detail."""
        rows = await self._rows(INTERNALS, (job_id,))
        return rows[0] if rows else None

    async def check_input(self, job_id: uuid.UUID) -> InputCheck:
        """Whether the job's input image is stored and still within the bucket's limits."""
        (row,) = await self._rows(CHECK_INPUT, (job_id,))
        return InputCheck(**row)

    async def bucket_size_limit(self, bucket: str) -> int | None:
        """The bucket's `file_size_limit` in bytes; None when it has none (or no such bucket)."""
        rows = await self._rows(BUCKET_SIZE_LIMIT, (bucket,))
        limit = rows[0]["file_size_limit"] if rows else None
        return int(limit) if limit is not None else None

    async def update_status(
        self,
        job_id: uuid.UUID,
        status: str,
        *,
        worker_id: str | None,
        provider: str | None = None,
        provider_task_id: str | None = None,
        provider_status: str | None = None,
        output_video_path: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> Job:
        (row,) = await self._rows(
            UPDATE_STATUS,
            {
                "job_id": job_id,
                "status": status,
                "provider": provider,
                "provider_task_id": provider_task_id,
                "provider_status": provider_status,
                "output_video_path": output_video_path,
                "error_code": error_code,
                "error_message": error_message,
                "worker_id": worker_id,
            },
        )
        return Job.from_row(row)


__all__ = ["Breaker", "LeaseState", "ServiceDatabase", "VidanimError", "open_pool"]
