"""The operators' actions: each one service function in SQL (0050-0053), audited there."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from vidanim.dashboard.queries import JobFilter
from vidanim.worker.db import ServiceDatabase

CANCEL_JOB: LiteralString = "select id from public.operator_cancel_video_job(%s, %s)"
RETRY_JOB: LiteralString = "select id from public.operator_retry_video_job(%s, %s)"
CANCEL_JOBS: LiteralString = "select * from public.operator_cancel_video_jobs(%s, %s, %s, %s)"
RETRY_JOBS: LiteralString = "select * from public.operator_retry_video_jobs(%s, %s, %s, %s)"
PAUSE: LiteralString = "select public.pause_video_submissions(%s, %s, %s) as changed"
RESUME: LiteralString = "select public.resume_video_submissions(%s, %s) as woken"
BREAKER: LiteralString = "select public.operator_set_video_provider_breaker(%s, %s, %s, %s) as changed"
SET_CAP: LiteralString = "select public.operator_set_video_daily_budget(%s, %s)"

BULK = {"cancel": CANCEL_JOBS, "retry": RETRY_JOBS}


async def cancel_job(db: ServiceDatabase, job_id: uuid.UUID, actor: str) -> None:
    await db.rows(CANCEL_JOB, (job_id, actor))


async def retry_job(db: ServiceDatabase, job_id: uuid.UUID, actor: str) -> uuid.UUID:
    return uuid.UUID(str((await db.rows(RETRY_JOB, (job_id, actor)))[0]["id"]))


async def bulk(
    db: ServiceDatabase, action: str, filt: JobFilter, actor: str, *, dry_run: bool, expected: int | None = None
) -> dict[str, Any]:
    rows = await db.rows(BULK[action], (Jsonb(filt.as_json()), actor, dry_run, expected))
    return rows[0]


async def pause(db: ServiceDatabase, provider: str | None, actor: str, reason: str | None) -> None:
    await db.rows(PAUSE, (provider, actor, reason))


async def resume(db: ServiceDatabase, provider: str | None, actor: str) -> int:
    return int((await db.rows(RESUME, (provider, actor)))[0]["woken"])


async def set_breaker(db: ServiceDatabase, provider: str, state: str, actor: str, reason: str | None) -> None:
    await db.rows(BREAKER, (provider, state, actor, reason))


async def set_cap(db: ServiceDatabase, cap: Decimal | None, actor: str) -> None:
    await db.rows(SET_CAP, (cap, actor))
