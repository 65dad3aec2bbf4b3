"""What the dashboard reads, as named SQL, and the shapes it hands the templates.

Every query reads a few index pages on a large table (0054's indexes): the list is
keyset-paginated on (created_at, id), its count stops at COUNT_CAP, and the overview
reads only active jobs (partial indexes) and the last day.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

from vidanim.worker.db import ServiceDatabase

STATUSES = ("queued", "processing", "completed", "failed", "canceled")
PROVIDERS = ("fal", "runway")
PAGE_SIZE = 50
COUNT_CAP = 10000
FILTER_KEYS = ("status", "provider", "waiting_reason", "error_code", "user_id", "created_from", "created_to", "q")
_CODE = re.compile(r"^[a-z_]{1,64}$")

ACTIVE_COUNTS: LiteralString = """
    select status, count(*)::bigint as jobs from public.video_jobs
     where status in ('queued', 'processing') group by status
"""
DAY_COUNTS: LiteralString = """
    select status, count(*)::bigint as jobs from public.video_jobs where created_at >= %s group by status
"""
OLDEST_QUEUED: LiteralString = "select min(created_at) as at from public.video_jobs where status = 'queued'"
WAITING: LiteralString = """
    select waiting_reason, count(*)::bigint as jobs from public.video_jobs
     where status in ('queued', 'processing') and waiting_reason is not null
     group by waiting_reason order by 2 desc, 1
"""
LEASES: LiteralString = """
    select locked_by as worker, count(*)::bigint as jobs, max(locked_until) as until from public.video_jobs
     where status in ('queued', 'processing') and locked_until > now()
     group by locked_by order by 2 desc, 1
"""
FAILURES: LiteralString = """
    select id, provider, error_code, error_message, completed_at from public.video_jobs
     where completed_at is not null and status = 'failed'
     order by completed_at desc limit 10
"""
COMPLETIONS: LiteralString = """
    select date_trunc('minute', completed_at) as minute, count(*)::bigint as jobs from public.video_jobs
     where completed_at >= %s and status = 'completed' group by 1
"""
# When each job entered and left the queue: the last day's jobs, and older ones still queued.
QUEUE_SPANS: LiteralString = """
    select created_at, coalesce(started_at, completed_at) as left_at from public.video_jobs where created_at >= %s
    union all
    select created_at, null from public.video_jobs where status = 'queued' and created_at < %s
"""
SPEND_TODAY: LiteralString = "select provider, committed_usd, submissions from public.get_video_spend(1)"
CAP: LiteralString = "select public.get_video_daily_budget() as cap"
BREAKERS: LiteralString = "select * from public.get_video_provider_breakers()"
PAUSES: LiteralString = "select * from public.get_video_submission_pauses()"
ACTIONS: LiteralString = "select * from public.get_video_operator_actions(%s)"

LIST_JOBS: LiteralString = """
    select id, user_id, status, provider, provider_task_id, provider_status, waiting_reason, error_code,
           attempts, created_at, completed_at
      from public.video_jobs j
     where (%(status)s::text is null or j.status = %(status)s)
       and (%(provider)s::text is null or j.provider = %(provider)s)
       and (%(waiting_reason)s::text is null or j.waiting_reason = %(waiting_reason)s)
       and (%(error_code)s::text is null or j.error_code = %(error_code)s)
       and (%(user_id)s::uuid is null or j.user_id = %(user_id)s)
       and (%(created_from)s::timestamptz is null or j.created_at >= %(created_from)s)
       and (%(created_to)s::timestamptz is null or j.created_at < %(created_to)s)
       and (%(q)s::text is null or j.provider_task_id = %(q)s or j.id = %(q_id)s::uuid)
       and (%(before_at)s::timestamptz is null or (j.created_at, j.id) < (%(before_at)s, %(before_id)s::uuid))
     order by j.created_at desc, j.id desc
     limit %(limit)s
"""
COUNT_JOBS: LiteralString = """
    select count(*)::bigint as jobs from (
      select 1 from public.video_jobs j
       where (%(status)s::text is null or j.status = %(status)s)
         and (%(provider)s::text is null or j.provider = %(provider)s)
         and (%(waiting_reason)s::text is null or j.waiting_reason = %(waiting_reason)s)
         and (%(error_code)s::text is null or j.error_code = %(error_code)s)
         and (%(user_id)s::uuid is null or j.user_id = %(user_id)s)
         and (%(created_from)s::timestamptz is null or j.created_at >= %(created_from)s)
         and (%(created_to)s::timestamptz is null or j.created_at < %(created_to)s)
         and (%(q)s::text is null or j.provider_task_id = %(q)s or j.id = %(q_id)s::uuid)
       limit %(cap)s) capped
"""
ESTIMATED_TOTAL: LiteralString = """
    select greatest(c.reltuples, 0)::bigint as jobs from pg_catalog.pg_class c
     where c.oid = 'public.video_jobs'::regclass
"""

GET_JOB: LiteralString = "select * from public.video_jobs where id = %s"
INTERNALS: LiteralString = "select * from public.get_video_job_internals(%s)"
TIMELINE: LiteralString = "select * from public.video_job_events where job_id = %s order by id"
DELIVERIES: LiteralString = "select * from public.get_video_job_deliveries(%s)"
IN_FLIGHT: LiteralString = "select * from public.get_video_job_submission_in_flight(%s)"


class BadFilter(ValueError):
    """A filter value that cannot be used, with a message for the operator."""


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    provider: str | None = None
    waiting_reason: str | None = None
    error_code: str | None = None
    user_id: uuid.UUID | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None

    @classmethod
    def parse(cls, values: dict[str, str]) -> JobFilter:
        """From a query string or form; BadFilter for a value that is not one of ours."""
        v = {k: (values.get(k) or "").strip() or None for k in FILTER_KEYS}
        if v["status"] is not None and v["status"] not in STATUSES:
            raise BadFilter(f"unknown status {v['status']!r}: use one of {', '.join(STATUSES)}")
        if v["provider"] is not None and v["provider"] not in PROVIDERS:
            raise BadFilter(f"unknown provider {v['provider']!r}: use one of {', '.join(PROVIDERS)}")
        for key in ("waiting_reason", "error_code"):
            if v[key] is not None and not _CODE.match(v[key] or ""):
                raise BadFilter(f"{key.replace('_', ' ')} is a code of a-z and _")
        if v["q"] is not None and len(v["q"] or "") > 255:
            raise BadFilter("the search is a job id or a provider task id (at most 255 characters)")
        try:
            user_id = uuid.UUID(v["user_id"]) if v["user_id"] else None
        except ValueError:
            raise BadFilter("user id must be a UUID") from None
        return cls(
            status=v["status"],
            provider=v["provider"],
            waiting_reason=v["waiting_reason"],
            error_code=v["error_code"],
            user_id=user_id,
            created_from=_when(v["created_from"], "from"),
            created_to=_when(v["created_to"], "to"),
            q=v["q"],
        )

    def params(self) -> dict[str, Any]:
        q_id = None
        if self.q:
            try:
                q_id = uuid.UUID(self.q)
            except ValueError:
                q_id = None
        return {
            "status": self.status,
            "provider": self.provider,
            "waiting_reason": self.waiting_reason,
            "error_code": self.error_code,
            "user_id": self.user_id,
            "created_from": self.created_from,
            "created_to": self.created_to,
            "q": self.q,
            "q_id": q_id,
        }

    def as_json(self) -> dict[str, str]:
        """The filter as the SQL actions take it (0052): only the keys set, as text."""
        out: dict[str, str] = {}
        for key, value in self.query().items():
            out[key] = value
        return out

    def query(self) -> dict[str, str]:
        """The filter as query-string values (for links and hidden fields)."""
        out: dict[str, str] = {}
        for key in FILTER_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    @property
    def empty(self) -> bool:
        return not self.query()


def _when(text: str | None, which: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"time range {which}: use a date or time like 2026-05-01 or 2026-05-01T12:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    job_id: uuid.UUID

    def dump(self) -> str:
        return f"{self.created_at.isoformat()}_{self.job_id}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        try:
            at, job_id = text.rsplit("_", 1)
            return cls(datetime.fromisoformat(at), uuid.UUID(job_id))
        except ValueError:
            raise BadFilter("that page link is not valid; start from the first page") from None


@dataclass
class JobPage:
    jobs: list[dict[str, Any]]
    count: int
    count_is_estimate: bool
    count_capped: bool
    next_cursor: str | None


async def job_page(db: ServiceDatabase, filt: JobFilter, cursor: Cursor | None, limit: int = PAGE_SIZE) -> JobPage:
    params = filt.params() | {
        "before_at": cursor.created_at if cursor else None,
        "before_id": cursor.job_id if cursor else None,
        "limit": limit + 1,
    }
    rows = await db.rows(LIST_JOBS, params)  # type: ignore[arg-type]
    more = len(rows) > limit
    rows = rows[:limit]
    if filt.empty:
        count = int((await db.rows(ESTIMATED_TOTAL, ()))[0]["jobs"])
        estimate, capped = True, False
        if count < COUNT_CAP:  # a small table: the exact figure costs nothing
            exact = await db.rows(COUNT_JOBS, filt.params() | {"cap": COUNT_CAP + 1})  # type: ignore[arg-type]
            count, estimate = int(exact[0]["jobs"]), False
            capped = count > COUNT_CAP
    else:
        exact = await db.rows(COUNT_JOBS, filt.params() | {"cap": COUNT_CAP + 1})  # type: ignore[arg-type]
        count, estimate = int(exact[0]["jobs"]), False
        capped = count > COUNT_CAP
    last = rows[-1] if rows and more else None
    return JobPage(
        jobs=rows,
        count=min(count, COUNT_CAP) if capped else count,
        count_is_estimate=estimate,
        count_capped=capped,
        next_cursor=Cursor(last["created_at"], last["id"]).dump() if last else None,
    )


@dataclass
class Overview:
    now: datetime
    active: dict[str, int]
    last_day: dict[str, int]
    oldest_queued: datetime | None
    waiting: list[dict[str, Any]]
    leases: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    depth: list[int]
    completions: list[int]
    spend: list[dict[str, Any]]
    cap: Any
    breakers: list[dict[str, Any]]
    pauses: list[dict[str, Any]]
    actions: list[dict[str, Any]] = field(default_factory=list)


async def overview(db: ServiceDatabase, now: datetime | None = None) -> Overview:
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=24)
    start = since.replace(second=0, microsecond=0)
    completions = [0] * 1440
    for r in await db.rows(COMPLETIONS, (start,)):
        index = int((r["minute"] - start).total_seconds() // 60)
        if 0 <= index < 1440:
            completions[index] += int(r["jobs"])
    spans = await db.rows(QUEUE_SPANS, (start - timedelta(hours=24), start - timedelta(hours=24)))
    return Overview(
        now=now,
        active={r["status"]: int(r["jobs"]) for r in await db.rows(ACTIVE_COUNTS, ())},
        last_day={r["status"]: int(r["jobs"]) for r in await db.rows(DAY_COUNTS, (since,))},
        oldest_queued=(await db.rows(OLDEST_QUEUED, ()))[0]["at"],
        waiting=await db.rows(WAITING, ()),
        leases=await db.rows(LEASES, ()),
        failures=await db.rows(FAILURES, ()),
        depth=queue_depth(spans, start),
        completions=completions,
        spend=await db.rows(SPEND_TODAY, ()),
        cap=(await db.rows(CAP, ()))[0]["cap"],
        breakers=await db.rows(BREAKERS, ()),
        pauses=await db.rows(PAUSES, ()),
        actions=await db.rows(ACTIONS, (8,)),
    )


def queue_depth(spans: list[dict[str, Any]], start: datetime, minutes: int = 1440) -> list[int]:
    """Jobs in the queue at the end of each minute from `start`: a sweep over entries and exits."""
    delta = [0] * (minutes + 1)
    for span in spans:
        entered = _minute_index(span["created_at"], start, minutes)
        left = _minute_index(span["left_at"], start, minutes) if span["left_at"] is not None else minutes
        if left <= entered:
            continue
        delta[entered] += 1
        delta[left] -= 1
    depth, level = [], 0
    for i in range(minutes):
        level += delta[i]
        depth.append(level)
    return depth


def _minute_index(at: datetime, start: datetime, minutes: int) -> int:
    return min(max(int((at - start).total_seconds() // 60), 0), minutes)


@dataclass
class JobDetail:
    job: dict[str, Any]
    internals: dict[str, Any]
    timeline: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    in_flight: dict[str, Any] | None


async def job_detail(db: ServiceDatabase, job_id: uuid.UUID, now: datetime | None = None) -> JobDetail | None:
    rows = await db.rows(GET_JOB, (job_id,))
    if not rows:
        return None
    internals = await db.rows(INTERNALS, (job_id,))
    events = await db.rows(TIMELINE, (job_id,))
    end = rows[0]["completed_at"] or now or datetime.now(UTC)
    for event, following in zip(events, [*events[1:], None], strict=True):
        until = following["created_at"] if following else end
        event["seconds"] = max((until - event["created_at"]).total_seconds(), 0.0)
        event["uncertain"] = event.get("provider_status") == "submission_uncertain"
    flight = await db.rows(IN_FLIGHT, (job_id,))
    return JobDetail(
        job=rows[0],
        internals=internals[0] if internals else {},
        timeline=events,
        deliveries=await db.rows(DELIVERIES, (job_id,)),
        in_flight=flight[0] if flight else None,
    )
