"""Worker benchmarks: dispatch overhead, concurrency, memory while streaming 1 GiB.

    python scripts/bench_worker.py                 # all three
    python scripts/bench_worker.py dispatch        # or one: dispatch | concurrency | memory

Everything runs on this machine: an embedded PostgreSQL, the provider simulator,
workers as real `python -m vidanim worker` processes. Figures go to
docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import psycopg

from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate
from vidanim.ports import free_port
from vidanim.simulator import Simulator
from vidanim.simulator.webhooks import USER_ID as SIM_FAL_USER_ID

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def database() -> Iterator[str]:
    with EmbeddedPostgres() as pg:
        dsn = pg.dsn()
        migrate(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("update public.video_quota_defaults set daily_limit = 1000000, max_active_jobs = 100000")
        yield dsn


def make_jobs(dsn: str, store: Path, n: int, per_user: int = 100) -> None:
    """n queued jobs through the real request function, each user with a stored image."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, n, per_user):
            user = uuid.uuid4()
            path = f"{user}/input.png"
            file = store / "video-inputs" / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(b"\x89PNG\r\n\x1a\n")
            conn.execute("insert into auth.users (id) values (%s)", (user,))
            conn.execute(
                "insert into storage.objects (bucket_id, name, metadata) values ('video-inputs', %s,"
                ' \'{"mimetype": "image/png"}\')',
                (path,),
            )
            with conn.transaction():
                conn.execute(
                    "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                    (f'{{"sub": "{user}"}}',),
                )
                for i in range(min(per_user, n - start)):
                    conn.execute("select public.request_video_animation(%s, %s)", (path, f"bench {start + i}"))


def worker_env(dsn: str, sim_url: str, store: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDANIM_")}
    env.update(
        {
            "VIDANIM_DATABASE_URL": dsn,
            "VIDANIM_FAL_KEY": "sim-fal-key",
            "VIDANIM_FAL_QUEUE_URL": sim_url,
            "VIDANIM_PROVIDERS": "fal",
            "VIDANIM_LOCAL_STORAGE_DIR": str(store),
            "VIDANIM_LOCAL_STORAGE_SECRET": "bench",
            "VIDANIM_LOG_LEVEL": "WARNING",
            "VIDANIM_WORKER_IDLE_POLL_SECONDS": "0.05",
            # the simulator's outputs are fetched over loopback, its deliveries signed for its account
            "VIDANIM_OUTPUT_DEV_HOSTS": urlsplit(sim_url).netloc,
            "VIDANIM_FAL_WEBHOOK_USER_ID": SIM_FAL_USER_ID,
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def span(dsn: str) -> tuple[int, float]:
    """(completed jobs, seconds from the first start to the last completion)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select count(*), extract(epoch from max(completed_at) - min(started_at))"
            " from public.video_jobs where status = 'completed'"
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1] or 0)


def reset(dsn: str, store: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("truncate public.video_jobs cascade")
        conn.execute("set storage.allow_delete_query = 'true'")
        conn.execute("delete from storage.objects where bucket_id = 'video-outputs'")
    shutil.rmtree(store / "video-outputs", ignore_errors=True)


def run_workers(env: dict[str, str], processes: int, concurrency: int) -> float:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vidanim", "worker", "--until-idle", "--concurrency", str(concurrency)],
            env={**env, "VIDANIM_WORKER_ID": f"bench-{i}"},
            cwd=ROOT,
        )
        for i in range(processes)
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"worker exited with {p.returncode}")
    return time.perf_counter() - started


def bench_dispatch(n: int) -> list[str]:
    lines = [
        "| worker processes | jobs | jobs/s (first start → last completion) | wall incl. process start |",
        "|---:|---:|---:|---:|",
    ]
    with (
        database() as dsn,
        tempfile.TemporaryDirectory() as tmp,
        Simulator(queue_seconds=0, run_seconds=0, output_size=4096) as sim,
    ):
        store = Path(tmp)
        env = worker_env(dsn, sim.base_url, store, VIDANIM_FAL_POLL_SECONDS="0.01")
        for processes in (1, 4):
            reset(dsn, store)
            make_jobs(dsn, store, n)
            wall = run_workers(env, processes, 50)
            done, seconds = span(dsn)
            assert done == n, (done, n)
            lines.append(f"| {processes} | {n} | {n / seconds:,.0f} | {wall:.1f} s |")
    return lines


def bench_concurrency(n: int, provider_seconds: float) -> list[str]:
    with (
        database() as dsn,
        tempfile.TemporaryDirectory() as tmp,
        Simulator(queue_seconds=0, run_seconds=provider_seconds, output_size=64 * 1024) as sim,
    ):
        store = Path(tmp)
        make_jobs(dsn, store, n)
        env = worker_env(dsn, sim.base_url, store, VIDANIM_FAL_POLL_SECONDS="2", VIDANIM_WORKER_DB_POOL_SIZE="20")
        wall = run_workers(env, 1, n)
        done, seconds = span(dsn)
        assert done == n, (done, n)
        submissions = len(sim.submissions)
        with psycopg.connect(dsn) as conn:
            spread, p50, p95 = conn.execute(
                "select extract(epoch from max(started_at) - min(started_at)),"
                " percentile_cont(0.5) within group (order by extract(epoch from completed_at - started_at)),"
                " percentile_cont(0.95) within group (order by extract(epoch from completed_at - started_at))"
                " from public.video_jobs"
            ).fetchone() or (0, 0, 0)
        print(f"all submitted within {spread:.1f} s; per job start→completion p50 {p50:.1f} s, p95 {p95:.1f} s")
    return [
        "| jobs | provider time each | worker concurrency | first start → last completion | wall incl. start |"
        " submissions |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {n} | {provider_seconds:g} s | {n} | {seconds:.1f} s | {wall:.1f} s | {submissions} |",
    ]


def _peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def bench_memory(size_mib: int) -> list[str]:
    sim_port, storage_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = f"http://127.0.0.1:{sim_port}"
    storage_url = f"http://127.0.0.1:{storage_port}"
    storage_secret = secrets.token_urlsafe(32)  # the Storage stand-in's JWT secret, as a project's
    service_key = jwt.encode({"role": "service_role", "iss": "supabase"}, storage_secret, algorithm="HS256")
    with database() as dsn, tempfile.TemporaryDirectory() as tmp:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vidanim",
                "simulator",
                "--port",
                str(sim_port),
                "--queue-seconds",
                "0",
                "--run-seconds",
                "0",
                "--output-mib",
                str(size_mib),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        # The Storage stand-in records objects in storage.objects, as Supabase's server does.
        sink_code = (
            "from tests.support import fake_supabase_storage as m;"
            f"m.FakeSupabaseStorage(database_url={dsn!r}, jwt_secret={storage_secret!r}, port={storage_port})"
            ".serve_forever()"
        )
        sink = subprocess.Popen([sys.executable, "-c", sink_code], env=env, cwd=ROOT)
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{storage_url}/", timeout=0.2)
                    httpx.get(f"{base}/", timeout=0.2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            # Baseline: curl downloads the same file and pipes it into an upload.
            task = httpx.post(
                f"{base}/fal-ai/x/y", json={"image_url": "http://x/a.png"}, headers={"Authorization": "Key sim-fal-key"}
            ).json()
            url = httpx.get(task["response_url"], headers={"Authorization": "Key sim-fal-key"}).json()["video"]["url"]
            started = time.perf_counter()
            subprocess.run(
                f"curl -sf '{url}' | curl -sf -X POST -H 'Authorization: Bearer {service_key}'"
                f" -H 'Content-Type: video/mp4' -T -"
                f" {storage_url}/storage/v1/object/video-outputs/curl/baseline.mp4 -o /dev/null",
                shell=True,
                check=True,
            )
            curl_seconds = time.perf_counter() - started
            store = Path(tmp)
            make_jobs(dsn, store, 1)
            wenv = worker_env(
                dsn,
                base,
                store,
                VIDANIM_FAL_POLL_SECONDS="0.05",
                VIDANIM_STORAGE_BACKEND="supabase",
                VIDANIM_SUPABASE_URL=storage_url,
                VIDANIM_SUPABASE_SERVICE_ROLE_KEY=service_key,
            )
            worker = subprocess.Popen([sys.executable, "-m", "vidanim", "worker", "--until-idle"], env=wenv, cwd=ROOT)
            peak = 0
            while worker.poll() is None:
                peak = max(peak, _peak_rss_kib(worker.pid))
                time.sleep(0.05)
            done, worker_seconds = span(dsn)
            assert done == 1, "the job did not complete"
        finally:
            for p in (sim, sink):
                p.send_signal(signal.SIGINT)
                p.kill()
                p.wait()
    size = size_mib * 1024 * 1024
    return [
        "| output | worker peak RSS | worker: start → stored → completed | curl download \\| curl upload "
        "| worker throughput / curl |",
        "|---:|---:|---:|---:|---:|",
        f"| {size_mib} MiB | {peak / 1024:.0f} MB | {worker_seconds:.1f} s "
        f"({size / worker_seconds / 1e6:,.0f} MB/s) | {curl_seconds:.1f} s ({size / curl_seconds / 1e6:,.0f} MB/s) "
        f"| {curl_seconds / worker_seconds:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["dispatch", "concurrency", "memory"])
    parser.add_argument("--dispatch-jobs", type=int, default=2000)
    parser.add_argument("--concurrency-jobs", type=int, default=1000)
    parser.add_argument("--provider-seconds", type=float, default=5.0)
    parser.add_argument("--memory-mib", type=int, default=1024)
    args = parser.parse_args()
    if "dispatch" in args.which:
        print("\nDispatch overhead (zero-latency simulator, 4 KiB outputs, local storage)")
        print("\n".join(bench_dispatch(args.dispatch_jobs)))
    if "concurrency" in args.which:
        print(f"\nConcurrency ({args.concurrency_jobs} jobs, provider {args.provider_seconds:g} s each, one worker)")
        print("\n".join(bench_concurrency(args.concurrency_jobs, args.provider_seconds)))
    if "memory" in args.which:
        print(f"\nMemory ({args.memory_mib} MiB output streamed provider → Supabase Storage API)")
        print("\n".join(bench_memory(args.memory_mib)))


if __name__ == "__main__":
    main()
