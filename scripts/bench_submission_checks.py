"""What the spend-safety checks cost each submission: breakers, concurrency slot, budget.

    python scripts/bench_submission_checks.py [--jobs 2000] [--clients 1 8]

Before each submission the worker reads the providers' breakers
(`get_video_provider_breakers`), takes a slot under the provider's cap
(`acquire_video_provider_slot`) and reserves the estimated cost under the daily cap
(`reserve_video_spend`, one lock for the whole day). This times those three calls
per job, as the worker makes them (one round trip each, as the service role), on a
throwaway PostgreSQL, with a cap and a concurrency limit set so every check does its
real work. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import psycopg

from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate

SET_USER = "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)"
RELEASE = "select public.release_video_jobs('bench', array[%s]::uuid[])"
CHECKS = (
    ("breakers", "select * from public.get_video_provider_breakers()", lambda job, worker: ()),
    ("slot", "select public.acquire_video_provider_slot(%s, %s, 'fal')", lambda job, worker: (job, worker)),
    ("budget", "select * from public.reserve_video_spend(%s, %s, 'fal', 0.28)", lambda job, worker: (job, worker)),
)


def setup(dsn: str, jobs: int) -> list[uuid.UUID]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        user = uuid.uuid4()
        conn.execute("insert into auth.users (id, aud, role) values (%s, 'authenticated', 'authenticated')", (user,))
        conn.execute(
            "insert into storage.objects (bucket_id, name, metadata) values ('video-inputs', %s, '{\"size\": 1}')",
            (f"{user}/a.png",),
        )
        conn.execute("set role service_role")
        conn.execute("select public.set_video_quota_limits(%s, %s, %s)", (user, jobs, jobs))
        conn.execute("select public.set_video_daily_budget(1000000)")
        conn.execute("select public.set_video_provider_limit('fal', 50)")
        conn.execute("reset role")
        claims = f'{{"sub": "{user}", "role": "authenticated"}}'
        ids = []
        for _ in range(jobs):
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                    (claims,),
                )
                row = conn.execute(
                    "select id from public.request_video_animation(%s, null, '{}', null)", (f"{user}/a.png",)
                ).fetchone()
            assert row is not None
            ids.append(row[0])
        conn.execute("set role service_role")
        conn.execute("select public.claim_video_jobs('bench', 1000, 3600)")
        while conn.execute("select count(*) from public.claim_video_jobs('bench', 1000, 3600)").fetchone()[0]:
            pass
    return ids


def run(dsn: str, ids: list[uuid.UUID], clients: int) -> dict[str, float]:
    """Mean microseconds per call of each check, with `clients` connections at once."""
    timings: dict[str, list[float]] = {name: [] for name, _, _ in CHECKS}
    lock = threading.Lock()

    def work(chunk: list[uuid.UUID]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("set role service_role")
            mine: dict[str, list[float]] = {name: [] for name, _, _ in CHECKS}
            for job in chunk:
                for name, query, params in CHECKS:
                    started = time.perf_counter()
                    conn.execute(query, params(job, "bench")).fetchall()
                    mine[name].append(time.perf_counter() - started)
                # The job moves on (untimed), freeing its slot: in flight stays about `clients`.
                conn.execute(RELEASE, (job,))
        with lock:
            for name, values in mine.items():
                timings[name] += values

    threads = [threading.Thread(target=work, args=(ids[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {name: statistics.mean(values) * 1e6 for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8])
    args = parser.parse_args()
    print("| connections | breakers read | concurrency slot | budget reservation | all three, per submission |")
    print("|---:|---:|---:|---:|---:|")
    with EmbeddedPostgres() as pg:
        for clients in args.clients:
            name = f"bench_{clients}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute(f"create database {name}")  # a fixed, generated name
            dsn = pg.dsn(name)
            migrate(dsn, compat=True)
            ids = setup(dsn, args.jobs)
            us = run(dsn, ids, clients)
            total = sum(us.values())
            cells = " | ".join(f"{us[name]:.0f} µs" for name, _, _ in CHECKS)
            print(f"| {clients} | {cells} | {total:.0f} µs |")


if __name__ == "__main__":
    main()
