"""Benchmark: request_video_animation against a bare INSERT, inside PostgREST's envelope.

Each request is what PostgREST runs for an RPC call: one transaction, with role and
JWT claims set locally, then the call, then COMMIT. The baseline does the same with
a single-row INSERT into a table as wide as video_jobs (no index, trigger or RLS),
through the same driver at the same concurrency, in the same run, so the ratio
isolates what the function itself costs: validation, the per-user lock, the
idempotency lookup, the quota, the job insert and its timeline trigger.

Nine requests in ten go to a user drawn uniformly from many; one in ten goes to one
of 16 hot users, who run into their daily limit;
after each level the script checks that no user holds more jobs than its limit
(overshoot) and that usage equals jobs.

    python scripts/bench_requests.py                # embedded PostgreSQL
    python scripts/bench_requests.py --database-url postgresql://postgres@host/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate

SET_CONTEXT = "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)"
# As PostgREST does: the server turns the result into the JSON body (PostgREST wraps an
# RPC in `select coalesce(json_agg(_postgrest_t), '[]')::varchar from fn(...)`).
CALL = "select to_json(j)::text from public.request_video_animation(%s, %s, %s, %s) j"
BASELINE_TABLE = "create table public.bench_bare_insert (like public.video_jobs including defaults)"
BASELINE_GRANT = "grant insert on public.bench_bare_insert to authenticated"
BASELINE_INSERT = (
    "insert into public.bench_bare_insert (user_id, input_image_path, prompt, options, client_request_id)"
    " values (%s, %s, %s, %s, %s)"
)
DAILY_LIMIT = 10


@dataclass
class Result:
    requests: int = 0
    ok: int = 0
    quota: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@contextlib.contextmanager
def database(admin_dsn: str | None) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        if admin_dsn is None:
            admin_dsn = stack.enter_context(EmbeddedPostgres()).dsn()
        name = f"vidanim_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        try:
            yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
        finally:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def prepare(dsn: str, n_users: int, without: list[str]) -> list[tuple[uuid.UUID, str]]:
    migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for trigger in without:  # to measure what one trigger costs each request
            conn.execute(sql.SQL("drop trigger {} on public.video_jobs").format(sql.Identifier(trigger)))
    users = [(uuid.uuid4(), "") for _ in range(n_users)]
    users = [(u, f"{u}/input.png") for u, _ in users]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(BASELINE_TABLE)
        conn.execute(BASELINE_GRANT)
        conn.execute(
            "update public.video_quota_defaults set daily_limit = %s, max_active_jobs = 100000", (DAILY_LIMIT,)
        )
        with conn.cursor() as cur:
            cur.executemany("insert into auth.users (id) values (%s)", [(u,) for u, _ in users])
            cur.executemany(
                "insert into storage.objects (bucket_id, name, owner_id, metadata)"
                " values ('video-inputs', %s, %s, '{\"mimetype\": \"image/png\"}')",
                [(p, str(u)) for u, p in users],
            )
    return users


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "truncate public.video_jobs, public.video_job_events, public.video_quota_usage, public.bench_bare_insert"
            " cascade"
        )
        conn.execute("vacuum analyze")


async def run_level(
    dsn: str, users: list[tuple[uuid.UUID, str]], mode: str, clients: int, seconds: float, pipeline: bool = False
) -> Result:
    result = Result()
    hot = users[:16]  # a tenth of the traffic goes to 16 users, who run into their daily limit
    deadline = 0.0

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await start.wait()
            while time.perf_counter() < deadline:
                user, path = rng.choice(hot) if rng.random() < 0.1 else rng.choice(users)
                claims = json.dumps({"sub": str(user), "role": "authenticated"})
                try:
                    # Sequential: one round trip per statement, as PostgREST does. Pipelined:
                    # the envelope's four statements in one round trip (psycopg pipeline mode).
                    async with contextlib.AsyncExitStack() as stack:
                        if pipeline:
                            await stack.enter_async_context(conn.pipeline())
                        await stack.enter_async_context(conn.transaction())
                        await conn.execute(SET_CONTEXT, (claims,))
                        if mode == "insert":
                            await conn.execute(BASELINE_INSERT, (user, path, "bench", Jsonb({}), None))
                        else:
                            await conn.execute(CALL, (path, "bench", Jsonb({}), None))
                    result.ok += 1
                except psycopg.Error as exc:
                    if exc.sqlstate == "PT429":
                        result.quota += 1
                    else:
                        result.errors += 1
                result.requests += 1

    start = asyncio.Event()
    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0.3)  # let every client connect
    began = time.perf_counter()
    deadline = began + seconds
    start.set()
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - began
    return result


def overshoot(dsn: str) -> tuple[int, int]:
    """(jobs beyond a user's limit, users whose usage differs from their job count)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """with jobs as (select user_id, count(*) as n from public.video_jobs group by user_id)
               select coalesce(sum(greatest(j.n - %s, 0)), 0),
                      count(*) filter (where u.used is distinct from j.n)
                 from jobs j left join public.video_quota_usage u using (user_id)""",
            (DAILY_LIMIT,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure(dsn: str, users: list[tuple[uuid.UUID, str]], args: argparse.Namespace, pipeline: bool) -> list[str]:
    rows = [
        "| clients | bare INSERT req/s | request_video_animation req/s | ratio | created | quota 429 | other errors "
        "| overshoot | usage≠jobs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in [int(c) for c in args.clients.split(",")]:
        # Alternate the two modes a few times and keep the median run of each:
        # two cores shared with the client make single runs noisy.
        bares, funcs, overs, mismatches = [], [], [], []
        for _ in range(args.rounds):
            reset(dsn)
            bares.append(asyncio.run(run_level(dsn, users, "insert", clients, args.seconds, pipeline)))
            reset(dsn)
            funcs.append(asyncio.run(run_level(dsn, users, "function", clients, args.seconds, pipeline)))
            over, mismatched = overshoot(dsn)
            overs.append(over)
            mismatches.append(mismatched)
        bare = sorted(bares, key=lambda r: r.rate)[len(bares) // 2]
        func = sorted(funcs, key=lambda r: r.rate)[len(funcs) // 2]
        rows.append(
            f"| {clients} | {bare.rate:,.0f} | {func.rate:,.0f} | {func.rate / bare.rate:.2f}x | {func.ok:,} "
            f"| {func.quota:,} | {func.errors + bare.errors} | {max(overs)} | {max(mismatches)} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="admin DSN of a server to create a scratch database on")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per level and mode; the median is shown")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument(
        "--envelope",
        choices=["both", "sequential", "pipelined"],
        default="both",
        help="sequential: a round trip per statement, as PostgREST; pipelined: the envelope in one round trip",
    )
    parser.add_argument(
        "--without-trigger",
        action="append",
        default=[],
        metavar="NAME",
        help="drop this trigger of video_jobs first, to measure its cost (e.g. video_jobs_notify_due)",
    )
    args = parser.parse_args()
    envelopes = ["sequential", "pipelined"] if args.envelope == "both" else [args.envelope]

    with database(args.database_url) as dsn:
        users = prepare(dsn, args.users, args.without_trigger)
        for envelope in envelopes:
            print(
                f"\nrequest_video_animation vs bare INSERT, PostgREST envelope ({envelope}), {args.users} users, "
                f"daily limit {DAILY_LIMIT}, median of {args.rounds} alternating runs of {args.seconds:g} s"
            )
            print("\n".join(measure(dsn, users, args, envelope == "pipelined")))


if __name__ == "__main__":
    main()
