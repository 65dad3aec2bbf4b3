"""`vidanim worker` through typer's runner: real database, the simulator over HTTP."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.worker.conftest import Users
from vidanim.cli import app
from vidanim.simulator import Simulator

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, db, tmp_path):
    for key in ("VIDANIM_FAL_KEY", "VIDANIM_RUNWAY_API_SECRET", "VIDANIM_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_worker_until_idle_completes_the_queued_jobs(env, db, tmp_path):
    users = Users(db, tmp_path / "store")
    user, path = users.user_with_image()
    job = users.request(user, path)
    with Simulator() as sim:
        env.setenv("VIDANIM_DATABASE_URL", db.dsn)
        env.setenv("VIDANIM_FAL_KEY", sim.fal_key)
        env.setenv("VIDANIM_FAL_QUEUE_URL", sim.base_url)
        env.setenv("VIDANIM_OUTPUT_DEV_HOSTS", sim.base_url.removeprefix("http://"))
        env.setenv("VIDANIM_FAL_POLL_SECONDS", "0.02")
        env.setenv("VIDANIM_LOCAL_STORAGE_DIR", str(tmp_path / "store"))
        env.setenv("VIDANIM_WORKER_IDLE_POLL_SECONDS", "0.05")
        result = runner.invoke(app, ["worker", "--until-idle", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    assert users.job(job["id"])["status"] == "completed"


def test_worker_without_a_provider_key_says_which_setting_is_missing(env, db):
    env.setenv("VIDANIM_DATABASE_URL", db.dsn)
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 2
    assert "no provider configured: set VIDANIM_FAL_KEY" in result.output
    assert "Traceback" not in result.output


def test_worker_without_a_database_is_a_one_line_error(env):
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "error: no database configured" in result.output


def test_worker_rejects_an_invalid_setting_by_name(env, db):
    env.setenv("VIDANIM_DATABASE_URL", db.dsn)
    env.setenv("VIDANIM_WORKER_LEASE_SECONDS", "1")
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 2
    assert "error: VIDANIM_WORKER_LEASE_SECONDS: Input should be greater than or equal to 2" in result.output


def test_worker_supabase_storage_needs_its_url_and_key(env, db):
    env.setenv("VIDANIM_DATABASE_URL", db.dsn)
    env.setenv("VIDANIM_FAL_KEY", "k")
    env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 2
    assert "VIDANIM_SUPABASE_URL" in result.output


def test_the_simulator_command_serves_both_providers_until_interrupted(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidanim", "simulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.strip() == f"simulator on http://127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        fal = httpx.post(
            f"{base}/fal-ai/x/y", json={"image_url": "http://x/a.png"}, headers={"Authorization": "Key sim-fal-key"}
        )
        runway = httpx.post(
            f"{base}/v1/image_to_video",
            json={"promptImage": "http://x/a.png", "model": "gen4_turbo"},
            headers={"Authorization": "Bearer sim-runway-secret", "X-Runway-Version": "2024-11-06"},
        )
        assert fal.json()["status"] == "IN_QUEUE"
        assert "id" in runway.json()
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == 0


def test_a_worker_whose_storage_key_storage_refuses_starts_and_says_so_in_one_line(env, db, tmp_path):
    import jwt

    from tests.support.fake_supabase_storage import FakeSupabaseStorage

    users = Users(db, tmp_path / "store")
    user, path = users.user_with_image()
    job = users.request(user, path)
    other = jwt.encode({"role": "service_role"}, "another-projects-jwt-secret-32-chars!", algorithm="HS256")
    with Simulator() as sim, FakeSupabaseStorage(db.dsn) as storage:
        env.setenv("VIDANIM_DATABASE_URL", db.dsn)
        env.setenv("VIDANIM_FAL_KEY", sim.fal_key)
        env.setenv("VIDANIM_FAL_QUEUE_URL", sim.base_url)
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", storage.url)
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", other)
        env.setenv("VIDANIM_WORKER_IDLE_POLL_SECONDS", "0.05")
        result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "event=worker.storage_check" in line]
    assert len(lines) == 1, result.output
    assert "level=error" in lines[0]
    assert "ok=False" in lines[0]
    assert "AccessDenied" in lines[0]
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("queued", "storage_unavailable")
