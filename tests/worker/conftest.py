"""Worker tests: a real PostgreSQL, the simulator over real HTTP, local storage on disk."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.db.helpers import request_job
from tests.support.images import PNG
from tests.support.seed import create_user
from vidanim.settings import Settings
from vidanim.simulator import Simulator
from vidanim.storage.local import LocalStorage
from vidanim.worker.assemble import WorkerApp, assembled
from vidanim.worker.db import open_pool


@pytest.fixture
def sim():
    with Simulator(queue_seconds=0.05, run_seconds=0.05) as s:
        yield s


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "storage"


def make_settings(db, sim, storage_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db.dsn,
        "worker_id": f"w-{uuid.uuid4().hex[:6]}",
        "worker_concurrency": 20,
        "worker_idle_poll_seconds": 0.05,
        "worker_lease_seconds": 30,
        "worker_shutdown_grace_seconds": 5,
        "fal_key": sim.fal_key,
        "fal_queue_url": sim.base_url,
        "fal_poll_seconds": 0.02,
        "runway_api_secret": sim.runway_secret,
        "runway_base_url": sim.base_url,
        "runway_poll_seconds": 0.02,
        "runway_enforce_min_poll": False,
        "retry_base_seconds": 0.01,
        "retry_cap_seconds": 0.05,
        "local_storage_dir": storage_dir,
        "local_storage_secret": "test-local-signing-secret",
        "job_deadline_seconds": 30,
        # the simulator serves outputs over http on loopback: a development host (output_hosts.py)
        "output_dev_hosts": urlsplit(sim.base_url).netloc,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def worker_env(db, sim, storage_dir) -> dict[str, str]:
    """The environment of a `vidanim worker` process on the test database and the simulator."""
    return {
        **os.environ,
        "VIDANIM_DATABASE_URL": db.dsn,
        "VIDANIM_FAL_KEY": sim.fal_key,
        "VIDANIM_FAL_QUEUE_URL": sim.base_url,
        "VIDANIM_OUTPUT_DEV_HOSTS": sim.base_url.removeprefix("http://"),
        "VIDANIM_FAL_POLL_SECONDS": "0.02",
        "VIDANIM_RUNWAY_API_SECRET": sim.runway_secret,
        "VIDANIM_RUNWAY_BASE_URL": sim.base_url,
        "VIDANIM_RUNWAY_POLL_SECONDS": "0.02",
        "VIDANIM_RUNWAY_ENFORCE_MIN_POLL": "false",
        "VIDANIM_LOCAL_STORAGE_DIR": str(storage_dir),
        "VIDANIM_LOCAL_STORAGE_SECRET": "test-local-signing-secret",
        "VIDANIM_WORKER_IDLE_POLL_SECONDS": "0.05",
        "VIDANIM_WORKER_CONCURRENCY": "40",
        "VIDANIM_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def settings_for(db, sim, storage_dir):
    def build(**overrides: Any) -> Settings:
        return make_settings(db, sim, storage_dir, **overrides)

    return build


@contextlib.asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[WorkerApp]:
    async with assembled(settings, **kwargs) as app:
        yield app


class Users:
    """Creates users with an input image, and jobs through the real SQL API."""

    def __init__(self, db, storage_dir: Path):
        self.db = db
        self.storage_dir = storage_dir
        with db.connect() as conn:
            conn.execute("select 1")
            with contextlib.suppress(psycopg.Error):
                conn.execute("update public.video_quota_defaults set daily_limit = 100000, max_active_jobs = 100000")

    def user_with_image(self, image: bytes = PNG) -> tuple[uuid.UUID, str]:
        with self.db.connect() as conn:
            user = create_user(conn)
            path = f"{user}/input.png"
            file = self.storage_dir / "video-inputs" / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(image)
            conn.execute(
                "insert into storage.objects (bucket_id, name, owner_id, metadata) values ('video-inputs', %s, %s, %s)",
                (path, str(user), psycopg.types.json.Jsonb({"mimetype": "image/png", "size": len(image)})),
            )
        return user, path

    def request(self, user: uuid.UUID, path: str, prompt: str = "make it move", **kw: Any) -> dict[str, Any]:
        with self.db.connect() as conn:
            return request_job(conn, user, path, prompt, **kw)

    def job(self, job_id: uuid.UUID) -> dict[str, Any]:
        with self.db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute("select * from public.video_jobs where id = %s", (job_id,))
            row = cur.fetchone()
        assert row is not None
        return dict(row)

    def internals(self, job_id: uuid.UUID) -> dict[str, Any]:
        """What the worker keeps of a job out of its user's reach."""
        with self.db.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute("select * from vidanim_private.video_job_internals where job_id = %s", (job_id,))
            row = cur.fetchone()
        return dict(row) if row else {}

    def timeline(self, job_id: uuid.UUID) -> list[tuple[str, str | None]]:
        with self.db.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    "select status, provider_status from public.video_job_events where job_id = %s order by id",
                    (job_id,),
                ).fetchall()
            ]

    def usage(self, user: uuid.UUID) -> int:
        with self.db.connect() as conn:
            row = conn.execute(
                "select coalesce(sum(used), 0) from public.video_quota_usage where user_id = %s", (user,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    def output_objects(self) -> list[str]:
        with self.db.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    "select name from storage.objects where bucket_id = 'video-outputs' order by name"
                ).fetchall()
            ]


@pytest.fixture
def users(db, storage_dir):
    return Users(db, storage_dir)


@pytest.fixture
def events(caplog):
    """Structured log events the worker emitted: list of (event, fields)."""
    caplog.set_level(logging.DEBUG, logger="vidanim")

    def collect(name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for r in caplog.records:
            event = getattr(r, "event", None)
            if event and (name is None or event == name):
                out.append({"event": event, **getattr(r, "fields", {})})
        return out

    return collect


__all__ = ["LocalStorage", "Users", "make_settings", "open_pool", "running", "worker_env"]
