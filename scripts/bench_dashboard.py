"""Benchmark: the dashboard's overview and filtered job lists on a year of history.

Builds 1,000,000 ended jobs (five timeline events each) spread over 365 days, plus a
day of live ones, with one INSERT ... SELECT generate_series per table under
`session_replication_role = replica` (no triggers: the rows are what the state machine
would have left). Then renders each page through the real app (ASGI, in process: the
server's time, no network) and prints the median and p95 per page. The goal is under
200 ms of server time per page (docs/dashboard.md).

    python scripts/bench_dashboard.py                 # embedded PostgreSQL, 1,000,000 jobs
    python scripts/bench_dashboard.py --jobs 100000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import LiteralString

import httpx
import psycopg
from pydantic import SecretStr

from vidanim.dashboard.app import create_app
from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate
from vidanim.settings import Settings
from vidanim.worker.db import open_pool

USERS: LiteralString = """
    insert into auth.users (id, aud, role, email)
    select gen_random_uuid(), 'authenticated', 'authenticated', 'bench' || g || '@example.test'
      from generate_series(1, %(users)s) g
"""
# Ended jobs over a year: 90 % completed, 7 % failed (three codes), 3 % canceled; two providers.
JOBS: LiteralString = """
    with u as (select array_agg(id) as ids from auth.users)
    insert into public.video_jobs (
      user_id, status, input_image_path, prompt, provider, provider_task_id, provider_status,
      output_video_path, error_code, error_message, attempts, next_attempt_at, quota_day,
      created_at, updated_at, started_at, completed_at)
    select u.ids[1 + g %% cardinality(u.ids)],
           s.status, 'bench/input.png', 'a cat turns its head',
           case when g %% 3 = 0 then 'runway' else 'fal' end,
           'task-' || g, case s.status when 'completed' then 'COMPLETED' else 'FAILED' end,
           case when s.status = 'completed' then 'bench/' || g || '.mp4' end,
           case s.status when 'failed'
                         then (array['provider_unavailable', 'provider_refused', 'input_missing'])[1 + g %% 3]
                         when 'canceled' then 'canceled_by_user' end,
           case when s.status <> 'completed' then 'The video could not be made.' end,
           1, t.at, (t.at at time zone 'utc')::date, t.at, t.at + interval '95 s', t.at + interval '5 s',
           t.at + interval '95 s'
      from u, generate_series(1, %(jobs)s) g
      cross join lateral (select now() - interval '365 days' * (g::float8 / %(jobs)s) as at) t
      cross join lateral (select case when g %% 100 < 90 then 'completed' when g %% 100 < 97 then 'failed'
                                      else 'canceled' end as status) s
"""
EVENTS: LiteralString = """
    insert into public.video_job_events (job_id, user_id, status, provider, provider_status, error_code, created_at)
    select j.id, j.user_id, e.status, j.provider, e.provider_status, case when e.n = 5 then j.error_code end,
           j.created_at + make_interval(secs => e.n * 20)
      from public.video_jobs j
     cross join lateral (values (1, 'queued', null), (2, 'processing', 'IN_QUEUE'), (3, 'processing', 'IN_PROGRESS'),
                                (4, 'processing', 'IN_PROGRESS'), (5, j.status, j.provider_status))
           as e(n, status, provider_status)
"""
LIVE: LiteralString = """
    with u as (select array_agg(id) as ids from auth.users)
    insert into public.video_jobs (user_id, status, input_image_path, prompt, provider, provider_task_id,
                                   waiting_reason, next_attempt_at, locked_by, locked_until, created_at)
    select u.ids[1 + g %% cardinality(u.ids)],
           case when g %% 4 = 0 then 'processing' else 'queued' end, 'bench/input.png', 'live',
           case when g %% 4 = 0 then 'fal' end, case when g %% 4 = 0 then 'live-' || g end,
           case when g %% 4 = 1 then 'budget_reached' end, now(),
           case when g %% 2 = 0 then 'worker-' || (g %% 5) end, case when g %% 2 = 0 then now() + interval '5 min' end,
           now() - make_interval(secs => g * 7)
      from u, generate_series(1, %(live)s) g
"""
PAGES = {
    "overview": "/",
    "jobs, no filter": "/jobs",
    "jobs, failed at fal": "/jobs?status=failed&provider=fal",
    "jobs, one error code, a week": "/jobs?error_code=input_missing&created_from={week_ago}",
    "jobs, search by task id": "/jobs?q=task-123456",
}


def build(dsn: str, jobs: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")
        started = time.monotonic()
        conn.execute(USERS, {"users": 1000})
        conn.execute(JOBS, {"jobs": jobs})
        conn.execute(EVENTS)
        conn.execute(LIVE, {"live": 400})
        conn.execute("set session_replication_role = origin")
        conn.execute("vacuum analyze public.video_jobs")
        conn.execute("vacuum analyze public.video_job_events")
        print(f"built {jobs:,} ended jobs, {5 * jobs:,} events in {time.monotonic() - started:.0f} s")


async def measure(dsn: str, rounds: int) -> None:
    settings = Settings(
        database_url=SecretStr(dsn),
        local_storage_dir=Path(tempfile.mkdtemp()),
        dashboard_viewer_password=SecretStr("bench"),
    )
    pool = open_pool(dsn, size=4)
    await pool.open()
    try:
        app = create_app(settings, pool, None)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            assert (await client.post("/login", data={"password": "bench"})).status_code == 303
            week_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
            print("| page | median | p95 | rows on the page |")
            print("|---|---:|---:|---:|")
            for name, path in PAGES.items():
                url = path.format(week_ago=week_ago)
                timings = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    response = await client.get(url)
                    timings.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, response.text[:500]
                timings.sort()
                rows = response.text.count("<tr>") - 1
                p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
                print(f"| {name} | {statistics.median(timings):.1f} ms | {p95:.1f} ms | {rows} |")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with EmbeddedPostgres() as pg:
        name = f"bench_dashboard_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute(f"create database {name}")  # a fixed, generated name
        dsn = pg.dsn(name)
        migrate(dsn, compat=True)
        build(dsn, args.jobs)
        asyncio.run(measure(dsn, args.rounds))


if __name__ == "__main__":
    main()
