"""`vidanim jobs list|show|cancel|retry|stats|prune` for operators (service role)."""

from __future__ import annotations

import getpass
import uuid
from typing import Annotated, Any, LiteralString

import typer

from vidanim.commands.common import (
    DatabaseUrl,
    JsonOut,
    as_service,
    emit_json,
    handled,
    parse_duration,
    settings,
    table,
    user_client,
)
from vidanim.errors import InvalidInput, NotFound
from vidanim.retention import COUNT_PRUNABLE, prune_all

app = typer.Typer(
    help="List, inspect, cancel and retry video jobs (operators, as the service role).", no_args_is_help=True
)

LIST_JOBS: LiteralString = """
    select id, user_id, status, waiting_reason, provider, provider_status, attempts, created_at, completed_at,
           error_code
      from public.video_jobs
     where (%(user)s::uuid is null or user_id = %(user)s)
       and (%(status)s::text is null or status = %(status)s)
     order by created_at desc
     limit %(limit)s
"""
GET_JOB: LiteralString = "select * from public.video_jobs where id = %s"
TIMELINE: LiteralString = "select * from public.video_job_events where job_id = %s order by id"
INTERNALS: LiteralString = "select * from public.get_video_job_internals(%s)"
CANCEL_AS_OPERATOR: LiteralString = "select * from public.operator_cancel_video_job(%s, %s)"
STATUSES = ("queued", "processing", "completed", "failed", "canceled")


def operator_actor() -> str:
    """Who an operator's command acts as in the audit log: the CLI and the login running it."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        login = "unknown"
    return f"cli:{login}"[:200]


def status_shown(job: dict[str, Any]) -> str:
    """The status, with why a queued job waits (`queued: budget_reached`): docs/api.md lists the reasons."""
    return f"{job['status']}: {job['waiting_reason']}" if job.get("waiting_reason") else str(job["status"])


def _job(cur: Any, job_id: uuid.UUID) -> dict[str, Any]:
    cur.execute(GET_JOB, (job_id,))
    row: dict[str, Any] | None = cur.fetchone()
    if row is None:
        raise NotFound(f"video job {job_id} not found")
    return row


@app.command("list")
def list_jobs(
    user: Annotated[uuid.UUID | None, typer.Option(help="Only this user's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help=f"Only jobs in this status ({', '.join(STATUSES)}).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """The newest jobs, all users unless --user."""
    s = settings(database_url)
    with handled():
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        with as_service(s) as cur:
            cur.execute(LIST_JOBS, {"user": user, "status": status, "limit": limit})
            rows = cur.fetchall()
    if json_out:
        return emit_json(rows)
    table(
        [
            [
                r["id"],
                r["user_id"],
                status_shown(r),
                r["provider"],
                r["provider_status"],
                r["attempts"],
                r["created_at"],
                r["error_code"],
            ]
            for r in rows
        ],
        ["id", "user", "status", "provider", "raw status", "attempts", "created", "error"],
    )
    return None


@app.command("show")
def show(job_id: uuid.UUID, database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """One job with its timeline."""
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        job = _job(cur, job_id)
        cur.execute(INTERNALS, (job_id,))
        job |= cur.fetchone() or {}
        cur.execute(TIMELINE, (job_id,))
        events = cur.fetchall()
    if json_out:
        return emit_json({"job": job, "timeline": events})
    for key in (
        "id",
        "user_id",
        "status",
        "input_image_path",
        "prompt",
        "provider",
        "provider_task_id",
        "provider_status",
        "output_video_path",
        "output_expired_at",
        "error_code",
        "error_message",
        "error_detail",
        "waiting_reason",
        "progress",
        "queue_position",
        "attempts",
        "provider_submissions",
        "uncertain_submissions",
        "estimated_cost_usd",
        "submitting_to",
        "next_attempt_at",
        "created_at",
        "started_at",
        "completed_at",
    ):
        if job.get(key) is not None:
            typer.echo(f"{key:>21}: {job[key]}")
    typer.echo("")
    table(
        [[e["created_at"], e["status"], e["provider"], e["provider_status"], e["error_code"]] for e in events],
        ["at", "status", "provider", "raw status", "error"],
    )
    return None


@app.command("cancel")
def cancel(job_id: uuid.UUID, database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """Cancel a queued or processing job as an operator: refunded as a user's cancel, recorded as
    `canceled_by_operator` and in the operators' audit log."""
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        job = cur.execute(CANCEL_AS_OPERATOR, (job_id, operator_actor())).fetchone()
    if json_out:
        return emit_json(job)
    typer.echo(f"canceled {job_id} (canceled_by_operator, as {operator_actor()})")
    return None


@app.command("retry")
def retry(job_id: uuid.UUID, database_url: DatabaseUrl = None, json_out: JsonOut = False) -> None:
    """Create a new job from a failed (or canceled) one, on its user's behalf; charged as a new job.

    Retrying the same job twice returns the same new job (its client_request_id is derived).
    """
    s = settings(database_url)
    with handled():
        with as_service(s) as cur:
            old = _job(cur, job_id)
        if old["status"] not in ("failed", "canceled"):
            raise InvalidInput(f"video job {job_id} is {old['status']}: only failed or canceled jobs are retried")
        with user_client(s, old["user_id"]) as client:
            job = client.request_animation(
                old["input_image_path"], old["prompt"], old["options"], client_request_id=f"retry:{job_id}"
            )
    if json_out:
        return emit_json(job)
    typer.echo(f"retry of {job_id}: new job {job.id} ({job.status})")
    return None


# The window's jobs: those still in video_jobs (active ones through the claimable index,
# ended ones through video_jobs_ended_created_idx: never a scan of the whole history), and
# the daily totals of those pruned since (0041), counted by whole UTC days.
STATS_WINDOW: LiteralString = """
    with live as (
        select status, provider, error_code, started_at, completed_at from public.video_jobs
         where status in ('queued', 'processing') and created_at >= now() - %(window)s
        union all
        select status, provider, error_code, started_at, completed_at from public.video_jobs
         where status in ('completed', 'failed', 'canceled') and created_at >= now() - %(window)s
    ), pruned as (
        select * from public.get_video_job_daily_totals(((now() - %(window)s) at time zone 'utc')::date)
    )
"""
STATS_BY_STATUS: LiteralString = (
    STATS_WINDOW
    + """
    select status, sum(n)::bigint as jobs
      from (select status, count(*) as n from live group by 1
            union all select status, sum(jobs) from pruned group by 1) s
     group by status order by status
"""
)
STATS_FAILURES: LiteralString = (
    STATS_WINDOW
    + """
    select coalesce(error_code, 'unknown') as error_code, sum(n)::bigint as jobs
      from (select error_code, count(*) as n from live where status = 'failed' group by 1
            union all select error_code, sum(jobs) from pruned where status = 'failed' group by 1) s
     group by 1 order by 2 desc, 1
"""
)
# Pruned durations are a histogram of whole seconds: each second counts as many times as it was seen.
STATS_DURATIONS: LiteralString = (
    STATS_WINDOW
    + """
    select provider, count(*)::bigint as completed,
           percentile_cont(0.5) within group (order by seconds) as p50_seconds,
           percentile_cont(0.95) within group (order by seconds) as p95_seconds
      from (select provider, extract(epoch from completed_at - started_at)::float8 as seconds from live
             where status = 'completed' and started_at is not null
            union all
            select p.provider, d.key::float8 from pruned p
             cross join lateral jsonb_each_text(p.durations) d
             cross join lateral generate_series(1, d.value::bigint)
             where p.status = 'completed') s
     group by provider order by provider
"""
)


@app.command("stats")
def stats(
    since: Annotated[str, typer.Option(help="Jobs created within this long: 24h, 7d, 90m.")] = "24h",
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Counts by status, failure reasons, and p50/p95 durations (start to stored video) per provider.

    Jobs already pruned are counted from their daily totals, by whole UTC days.
    """
    window = parse_duration(since)
    s = settings(database_url)
    with handled(), as_service(s) as cur:
        by_status = cur.execute(STATS_BY_STATUS, {"window": window}).fetchall()
        failures = cur.execute(STATS_FAILURES, {"window": window}).fetchall()
        durations = cur.execute(STATS_DURATIONS, {"window": window}).fetchall()
    if json_out:
        return emit_json({"since": since, "by_status": by_status, "failures": failures, "durations": durations})
    typer.echo(f"jobs created in the last {since}")
    table([[r["status"], r["jobs"]] for r in by_status], ["status", "jobs"])
    if failures:
        typer.echo("")
        table([[r["error_code"], r["jobs"]] for r in failures], ["failure", "jobs"])
    if durations:
        typer.echo("")
        table(
            [
                [r["provider"], r["completed"], f"{r['p50_seconds']:.1f} s", f"{r['p95_seconds']:.1f} s"]
                for r in durations
            ],
            ["provider", "completed", "p50", "p95"],
        )
    return None


@app.command("prune")
def prune(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Ended this long ago: 90d, 12w (at least 1 day).")
    ] = "90d",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=10000, help="Jobs per batch (one transaction each).")
    ] = 1000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be pruned.")] = False,
    database_url: DatabaseUrl = None,
    json_out: JsonOut = False,
) -> None:
    """Delete ended jobs and their timelines, in batches, keeping per-day totals for `jobs stats`.

    A completed job whose video is still stored is never pruned (`storage cleanup` expires it first).
    """
    age = parse_duration(older_than)
    s = settings(database_url)
    with handled():
        if dry_run:
            with as_service(s) as cur:
                row = cur.execute(COUNT_PRUNABLE, (age,)).fetchone() or {"jobs": 0, "oldest": None}
            if json_out:
                return emit_json({"dry_run": True, "jobs": row["jobs"], "oldest": row["oldest"]})
            typer.echo(f"would prune {row['jobs']} job(s) ended more than {older_than} ago (oldest: {row['oldest']})")
            return None
        total = prune_all(s.require_database_url(), age, batch_size)
    if json_out:
        return emit_json({"dry_run": False, "jobs": total.jobs, "events": total.events, "batches": total.batches})
    typer.echo(f"pruned {total.jobs} job(s) and {total.events} event(s) in {total.batches} batch(es)")
    return None
