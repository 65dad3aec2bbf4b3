"""Benchmark: the hot paths with an empty history and with a year of it.

"Empty" is a database holding only its 10,000 queued jobs; "with history" adds
1,000,000 ended jobs (completed, failed, canceled over the last year, five timeline
events each: a year of a modest product), bulk-loaded with `generate_series` as the
superuser with triggers and foreign keys off (`session_replication_role = replica`),
then ANALYZEd. For each hot path the script prints the median time of each state and
their ratio; the goal is at most 1.5x for every one.

    claim            claim_video_jobs(10 jobs), then handed back
    request          request_video_animation in PostgREST's envelope (as a user)
    metrics scrape   the worker's queue read (vidanim.worker.metrics.JOB_COUNTS)
    jobs stats       the three queries of `vidanim jobs stats --since 24h`
    prune batch      prune_video_jobs('90 days', 1000): one batch of 1,000 jobs

    python scripts/bench_history.py                 # 1,000,000 ended jobs
    python scripts/bench_history.py --jobs 100000   # a quicker run while developing
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from vidanim.commands.jobs import STATS_BY_STATUS, STATS_DURATIONS, STATS_FAILURES
from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate
from vidanim.worker.metrics import JOB_COUNTS

QUEUED = 10_000
USERS = 2_000
SET_CONTEXT = "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
CALL = "select to_json(j)::text from public.request_video_animation(%s, %s, %s, %s) j"
CLAIM = "select id from public.claim_video_jobs(%s, 10, 300)"
RELEASE = "select public.release_video_jobs(%s, %s)"
PRUNE = "select * from public.prune_video_jobs('90 days', 1000)"

SEED_USERS = """
    insert into auth.users (id) select id from bench_users;
    insert into storage.objects (bucket_id, name, owner_id, metadata)
    select 'video-inputs', id::text || '/input.png', id::text, '{"mimetype": "image/png", "size": 1000}'
      from bench_users;
    update public.video_quota_defaults set daily_limit = 10000, max_active_jobs = 100;
"""
# Jobs spread over the last year; a completed job's video expired after 30 days.
BULK_JOBS = """
    insert into public.video_jobs (id, user_id, status, input_image_path, prompt, provider, provider_task_id,
                                   provider_status, output_video_path, output_expired_at, error_code,
                                   error_message, attempts, provider_submissions, next_attempt_at, quota_day,
                                   created_at, updated_at, started_at, completed_at)
    select gen_random_uuid(), u.id, s.status, u.id::text || '/input.png', 'bench',
           case when g %% 3 = 0 then 'runway' else 'fal' end, 't' || g,
           upper(s.status),
           case when s.status = 'completed' and t.ended > now() - interval '30 days'
                then u.id::text || '/' || g || '.mp4' end,
           case when s.status = 'completed' and t.ended <= now() - interval '30 days'
                then t.ended + interval '30 days' end,
           case when s.status = 'failed' then 'provider_error' end,
           case when s.status = 'failed' then 'the provider failed' end,
           1, 1, t.created, (t.created at time zone 'utc')::date, t.created, t.ended, t.created + interval '5 seconds',
           t.ended
      from generate_series(%(from)s::bigint, %(to)s::bigint) g
      join bench_users u on u.n = g %% %(users)s
     cross join lateral (select case when g %% 10 = 0 then 'failed' when g %% 20 = 1 then 'canceled'
                                     else 'completed' end as status) s
     cross join lateral (select %(newest)s::float8 + (g - %(first)s::bigint)::float8 / %(total)s::float8
                                * (%(oldest)s::float8 - %(newest)s::float8) as days) a
     cross join lateral (select now() - make_interval(secs => a.days * 86400) - interval '2 minutes' as created) c
     cross join lateral (select c.created as created, c.created + interval '65 seconds' as ended) t
"""
BULK_EVENTS = """
    insert into public.video_job_events (job_id, user_id, status, provider, provider_status, error_code, created_at)
    select j.id, j.user_id, e.status, case when e.n > 1 then j.provider end, e.raw,
           case when e.n = 5 then j.error_code end, j.created_at + make_interval(secs => e.n * 10)
      from public.video_jobs j
     cross join lateral (values (1, 'queued', null), (2, 'queued', 'IN_QUEUE'), (3, 'processing', 'IN_PROGRESS'),
                                (4, 'processing', 'IN_PROGRESS'), (5, j.status, upper(j.status))) e(n, status, raw)
     where j.status <> 'queued'
"""
BULK_QUEUED = """
    insert into public.video_jobs (user_id, input_image_path, prompt, created_at, next_attempt_at)
    select u.id, u.id::text || '/input.png', 'bench', now() - interval '1 minute', now() - interval '1 minute'
      from generate_series(1, %(n)s::bigint) g join bench_users u on u.n = g %% %(users)s
"""


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def bulk(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> None:
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")  # no triggers, no foreign key checks
        conn.execute(query, params)  # type: ignore[arg-type]


_loaded = [0]  # ended jobs generated so far: each one's number names its task


def add_ended_jobs(conn: psycopg.Connection[Any], jobs: int, newest_days: float, oldest_days: float) -> None:
    """`jobs` ended jobs created between `oldest_days` and `newest_days` ago, in chunks."""
    base = _loaded[0] + 1
    _loaded[0] += jobs
    chunk = 100_000
    for lo in range(base, base + jobs, chunk):
        params = {
            "from": lo,
            "to": min(lo + chunk - 1, base + jobs - 1),
            "users": USERS,
            "total": jobs,
            "first": base,
            "newest": newest_days,
            "oldest": oldest_days,
        }
        bulk(conn, BULK_JOBS, params)


def load_history(conn: psycopg.Connection[Any], jobs: int) -> float:
    started = time.perf_counter()
    conn.execute("delete from public.video_job_events")
    add_ended_jobs(conn, jobs, 0, 365)
    bulk(conn, BULK_EVENTS, {})  # five for every ended job
    conn.execute("vacuum analyze public.video_jobs")
    conn.execute("vacuum analyze public.video_job_events")
    return time.perf_counter() - started


def measure(conn: psycopg.Connection[Any], users: list[uuid.UUID], repeat: int) -> dict[str, float]:
    picks = iter(users * 1000)

    def claim() -> None:
        with conn.transaction():
            conn.execute("set local role service_role")
            ids = [r[0] for r in conn.execute(CLAIM, ("bench",)).fetchall()]
        with conn.transaction():
            conn.execute("set local role service_role")
            conn.execute(RELEASE, ("bench", ids))

    def claim_only() -> float:
        with conn.transaction():
            conn.execute("set local role service_role")
            started = time.perf_counter()
            ids = [r[0] for r in conn.execute(CLAIM, ("bench",)).fetchall()]
            took = (time.perf_counter() - started) * 1000
        with conn.transaction():
            conn.execute("set local role service_role")
            conn.execute(RELEASE, ("bench", ids))
        return took

    def request() -> None:
        user = next(picks)
        with conn.transaction():
            conn.execute(SET_CONTEXT, ("authenticated", json.dumps({"sub": str(user), "role": "authenticated"})))
            conn.execute(CALL, (f"{user}/input.png", "bench", Jsonb({}), None))

    def as_service(*queries: Any) -> Callable[[], None]:
        def run() -> None:
            with conn.transaction():
                conn.execute("set local role service_role")
                for q, params in queries:
                    conn.execute(q, params).fetchall()

        return run

    window = {"window": timedelta(hours=24)}
    claim()
    claims = sorted(claim_only() for _ in range(repeat))
    return {
        "claim (10 jobs)": statistics.median(claims),
        "request": median_ms(request, repeat * 4),
        "metrics scrape": median_ms(as_service((JOB_COUNTS, ())), repeat),
        "jobs stats --since 24h": median_ms(
            as_service((STATS_BY_STATUS, window), (STATS_FAILURES, window), (STATS_DURATIONS, window)), repeat
        ),
    }


def prune_batches(conn: psycopg.Connection[Any], batches: int) -> float:
    times = []
    for _ in range(batches):
        with conn.transaction():
            conn.execute("set local role service_role")
            started = time.perf_counter()
            (jobs, _events) = conn.execute(PRUNE).fetchone() or (0, 0)
            times.append((time.perf_counter() - started) * 1000)
        assert jobs == 1000, f"a batch pruned {jobs} jobs, not 1000"
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="admin DSN of a server to create a scratch database on")
    parser.add_argument("--jobs", type=int, default=1_000_000, help="ended jobs of history (five events each)")
    parser.add_argument("--repeat", type=int, default=25, help="timed runs per path (the median is shown)")
    args = parser.parse_args()
    with EmbeddedPostgres() as pg:
        admin_dsn = args.database_url or pg.dsn()
        name = f"vidanim_history_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            users = [uuid.uuid4() for _ in range(USERS)]
            conn.execute("create table bench_users (n int primary key, id uuid not null)")
            with conn.cursor() as cur:
                cur.executemany("insert into bench_users values (%s, %s)", list(enumerate(users)))
            conn.execute(SEED_USERS)  # type: ignore[arg-type]
            bulk(conn, BULK_QUEUED, {"n": QUEUED, "users": USERS})
            # a small history to prune while "empty": three batches' worth, ended 200-300 days ago
            add_ended_jobs(conn, 3000, 200, 300)
            bulk(conn, BULK_EVENTS, {})  # with their five events each, as the history's jobs
            conn.execute("vacuum analyze")
            empty = measure(conn, users, args.repeat)
            empty["prune batch (1,000 jobs)"] = prune_batches(conn, 3)
            conn.execute("vacuum analyze")
            loaded = load_history(conn, args.jobs)
            (ended,) = conn.execute("select count(*) from public.video_jobs where status <> 'queued'").fetchone() or (
                0,
            )
            (events,) = conn.execute("select count(*) from public.video_job_events").fetchone() or (0,)
            history = measure(conn, users, args.repeat)
            history["prune batch (1,000 jobs)"] = prune_batches(conn, 3)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
    print(f"\nhistory: {ended:,} ended jobs, {events:,} events, loaded in {loaded:.0f} s; {QUEUED:,} queued jobs")
    print("| hot path | empty (ms) | with history (ms) | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for path, ms in empty.items():
        ratio = history[path] / ms
        worst = max(worst, ratio)
        print(f"| {path} | {ms:.2f} | {history[path]:.2f} | {ratio:.2f}x |")
    print(f"\nworst ratio {worst:.2f}x (goal: at most 1.5x)")


if __name__ == "__main__":
    main()
