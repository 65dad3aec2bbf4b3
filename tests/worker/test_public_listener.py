"""A slow-loris on the public listener of a real worker process whose soft open-files limit is 1,024.

The review's attack: 1,100 connections that send half a request and hold. Before, they
were held forever: the worker ran out of descriptors, `/healthz` stopped answering, its
own calls to fal failed (EMFILE) and opened the breaker every worker shares, and
asyncio's accept loop wrote a traceback per pending connection. Now the header timeout
closes what it holds, the connection cap answers the excess 503 at once, the soft limit
is raised to the hard one at start, and the logs stay a few lines. The cap alone (the
raise turned off) must hold too.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.grant_modes import service_role_scenario
from vidanim.ports import free_port

ATTACK_CONNECTIONS = 1100
SOFT_LIMIT = 1024
# generous bounds for events, never fixed sleeps
START_SECONDS = 60.0
JOB_SECONDS = 60.0
EOF_SECONDS = 30.0
# a worker's whole stderr for this run, attack included (it was 126 MB a minute)
STDERR_BOUND = 64 * 1024
PARTIAL_REQUEST = b"POST /webhooks/fal/%s HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"


def low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


def start_worker(
    db, sim, storage_dir: Path, stderr: Path, cwd: Path, *, raise_limit: bool
) -> tuple[subprocess.Popen[bytes], int, int]:
    public, operator = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDANIM_")} | {
        "VIDANIM_DATABASE_URL": db.dsn,
        "VIDANIM_PROVIDERS": "fal",
        "VIDANIM_FAL_KEY": sim.fal_key,
        "VIDANIM_FAL_QUEUE_URL": sim.base_url,
        "VIDANIM_FAL_POLL_SECONDS": "0.05",
        "VIDANIM_LOCAL_STORAGE_DIR": str(storage_dir),
        "VIDANIM_LOCAL_STORAGE_SECRET": "test-local-signing-secret",
        "VIDANIM_WORKER_IDLE_POLL_SECONDS": "0.1",
        "VIDANIM_HTTP_PORT": str(public),
        "VIDANIM_OPERATOR_PORT": str(operator),
        "VIDANIM_WEBHOOK_PUBLIC_URL": f"http://127.0.0.1:{public}",
        "VIDANIM_FAL_WEBHOOK_JWKS_URLS": sim.jwks_url,
        # a webhook the attack keeps out is made up for by a poll soon after
        "VIDANIM_FAL_WEBHOOK_POLL_SECONDS": "0.5",
        "VIDANIM_OUTPUT_DEV_HOSTS": sim.base_url.removeprefix("http://"),
        "VIDANIM_WORKER_RAISE_OPEN_FILES": "true" if raise_limit else "false",
    }
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidanim", "worker"],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=low_soft_limit,
        )
    return proc, public, operator


def wait_healthy(proc: subprocess.Popen[bytes], operator: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        assert proc.poll() is None, "the worker exited"
        try:
            if httpx.get(f"http://127.0.0.1:{operator}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the worker never answered /healthz"
        time.sleep(0.1)


def half_open(port: int, n: int) -> list[socket.socket]:
    """`n` connections, each with half its request headers sent, held open by us."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        with contextlib.suppress(OSError):  # refused at once by the cap: its end is read below like the others
            s.sendall(PARTIAL_REQUEST % str(uuid.uuid4()).encode())
        held.append(s)
    return held


def ends_of(held: list[socket.socket], seconds: float) -> list[str]:
    """Read every socket until the server closes it: 'busy' (its 503), 'closed' (EOF, no answer),
    'reset', or 'still open' once `seconds` have passed (one deadline for all)."""
    received = {s: b"" for s in held}
    ends: dict[socket.socket, str] = {}
    with selectors.DefaultSelector() as selector:
        for s in held:
            s.setblocking(False)
            selector.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while len(ends) < len(held) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(timeout=left):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    chunk, ends[s] = b"", "reset"
                received[s] += chunk
                if not chunk:
                    selector.unregister(s)
                    if s not in ends:
                        ends[s] = "busy" if received[s].startswith(b"HTTP/1.1 503") else "closed"
                    if received[s] and not received[s].startswith(b"HTTP/1.1 503"):
                        ends[s] = f"answered {received[s][:40]!r}"
    for s in held:
        s.close()
    return [ends.get(s, "still open") for s in held]


def breakers(db) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [tuple(r) for r in conn.execute("select provider, state from vidanim_private.video_provider_breakers")]


@service_role_scenario
@pytest.mark.slow
@pytest.mark.parametrize("raise_limit", [True, False], ids=["limit_raised", "cap_alone"])
def test_a_slow_loris_of_1100_connections_leaves_health_jobs_and_breakers_alone(
    db, sim, users, storage_dir, tmp_path, raise_limit
):
    stderr = tmp_path / "worker.stderr"
    proc, public, operator = start_worker(db, sim, storage_dir, stderr, tmp_path, raise_limit=raise_limit)
    held: list[socket.socket] = []
    try:
        wait_healthy(proc, operator)
        held = half_open(public, ATTACK_CONNECTIONS)

        user, path = users.user_with_image()
        job = users.request(user, path)  # created during the attack
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{operator}/healthz", timeout=5).status_code == 200

        deadline = time.monotonic() + JOB_SECONDS
        while (row := users.job(job["id"]))["status"] != "completed":
            assert row["status"] in ("queued", "processing"), row
            assert time.monotonic() < deadline, f"the job did not complete: {row['status']} {row['waiting_reason']}"
            time.sleep(0.1)
        assert [state for _, state in breakers(db) if state != "closed"] == [], "no breaker opened"
        assert len(sim.submissions) == 1

        ends, held = ends_of(held, EOF_SECONDS), []
        kinds = {kind: ends.count(kind) for kind in set(ends)}
        assert set(kinds) <= {"busy", "closed", "reset"}, kinds
        assert kinds.get("closed", 0) >= 1, f"the held ones are closed by the header timeout: {kinds}"
        assert httpx.get(f"http://127.0.0.1:{operator}/healthz", timeout=5).status_code == 200
    finally:
        for s in held:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = stderr.read_bytes()
    assert len(log) < STDERR_BOUND, f"{len(log)} bytes of stderr"
    assert b"Traceback" not in log
    assert b"Too many open files" not in log, "the worker never ran out of descriptors"
    if raise_limit:
        assert b"worker.open_files_limit" in log
        assert b"soft_before=1024" in log
