"""A running dashboard over a real database holding jobs in every state, and a headless Chromium.

The dashboard is the real app under uvicorn on a free loopback port, in a thread of its
own; Supabase Auth is a loopback double (tests/support/fake_supabase_auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from pydantic import SecretStr

from tests.db.helpers import claim, request_job, service, update_status
from tests.support.fake_supabase_auth import FakeSupabaseAuth
from tests.support.seed import create_user, put_input_image, put_object, set_limits
from vidanim.dashboard.serve import dashboard_app
from vidanim.ports import free_port
from vidanim.settings import Settings

JWT_SECRET = "dashboard-test-jwt-secret-of-32-bytes!"
VIEWER_PASSWORD = "viewer-pw"
OPERATOR_PASSWORD = "operator-pw"
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# A day of ended jobs behind the live ones, so the overview's chart has a shape (no triggers: the
# rows are what the state machine would have left).
DAY_OF_HISTORY = """
    insert into public.video_jobs (user_id, status, input_image_path, prompt, provider, provider_task_id,
                                   provider_status, output_video_path, attempts, created_at, updated_at,
                                   started_at, completed_at)
    select %(user)s, 'completed', %(path)s, 'history', 'fal', 'hist-' || g, 'COMPLETED', 'history/' || g || '.mp4', 1,
           t.at, t.at, t.at + make_interval(mins => (g * 7) %% 23), t.at + make_interval(mins => (g * 7) %% 23 + 2)
      from generate_series(1, 480) g
     cross join lateral (select now() - make_interval(mins => 3 * g + (g %% 5)) as at) t
"""


@dataclass
class Seeded:
    queued: uuid.UUID
    processing: uuid.UUID
    completed: uuid.UUID
    failed: list[uuid.UUID]
    canceled: uuid.UUID
    waiting: uuid.UUID
    evil: uuid.UUID


def seed(conn: psycopg.Connection[Any], storage_dir: Path) -> Seeded:
    """Jobs in every state, a waiting one, and one whose prompt and error are HTML."""
    user = create_user(conn)
    set_limits(conn, user, 1000, 1000)
    path = put_input_image(conn, user)

    def job(prompt: str = "a cat turns its head") -> uuid.UUID:
        return request_job(conn, user, path, prompt)["id"]

    queued, processing, completed, canceled, waiting = job(), job(), job(), job(), job()
    failed = [job() for _ in range(3)]
    evil = job(EVIL)
    claim(conn, "worker-a", limit=100)
    update_status(conn, processing, "processing", provider="fal", provider_task_id="fal-task-1", worker_id="worker-a")
    update_status(conn, completed, "processing", provider="runway", provider_task_id="rw-task-2", worker_id="worker-a")
    output = f"{user}/{completed}.mp4"
    file = storage_dir / "video-outputs" / output
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"\0\0\0\x1cftypisom" + b"\0" * 64)
    put_object(conn, "video-outputs", output, mimetype="video/mp4")
    update_status(conn, completed, "completed", output_video_path=output, worker_id="worker-a")
    for f in failed:
        update_status(
            conn,
            f,
            "failed",
            error_code="provider_unavailable",
            error_message="The providers failed.",
            worker_id="worker-a",
        )
    update_status(conn, evil, "failed", error_code="provider_refused", error_message=EVIL, worker_id="worker-a")
    service(conn, "select * from public.defer_video_job(%s, 'worker-a', 3600, 'budget_reached')", (waiting,))
    service(conn, "select * from public.defer_video_job(%s, 'worker-a', 3600, 'storage_unavailable')", (queued,))
    conn.execute(
        "update public.video_jobs set status = 'canceled', error_code = 'canceled_by_user', completed_at = now()"
        " where id = %s",
        (canceled,),
    )
    conn.execute("set session_replication_role = replica")
    conn.execute(DAY_OF_HISTORY, {"user": user, "path": path})
    conn.execute("set session_replication_role = origin")
    service(conn, "select public.set_video_daily_budget(25)")
    service(conn, "select public.open_video_provider_breaker('runway', 'credits', 'Runway: out of credits', 600)")
    return Seeded(queued, processing, completed, failed, canceled, waiting, evil)


@dataclass
class RunningDashboard:
    url: str
    seeded: Seeded
    db: Any
    auth: FakeSupabaseAuth

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30.0)

    def signed_in(self, password: str) -> tuple[httpx.Client, str]:
        """A client with a session, and the session's CSRF token (read from a page's form)."""
        client = self.client()
        response = client.post("/login", data={"password": password})
        assert response.status_code == 303, response.text
        page = client.get("/")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return client, token


@contextlib.contextmanager
def running_dashboard(settings: Settings) -> Iterator[str]:
    port = free_port()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        async with dashboard_app(settings) as app:
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
            holder["server"] = server

            async def watch() -> None:
                while not server.started:
                    await asyncio.sleep(0.01)
                started.set()

            watcher = asyncio.create_task(watch())
            await server.serve()
            watcher.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(30), "the dashboard did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(30)


@pytest.fixture
def dashboard(db, tmp_path) -> Iterator[RunningDashboard]:
    storage_dir = tmp_path / "storage"
    with db.connect() as conn:
        seeded = seed(conn, storage_dir)
    with FakeSupabaseAuth(JWT_SECRET) as auth:
        auth.add_user("ops@example.test", "ops-secret", {"vidanim_role": "operator"})
        auth.add_user("look@example.test", "look-secret", {"vidanim_role": "viewer"})
        auth.add_user("user@example.test", "user-secret", {"provider": "email"})
        settings = Settings(
            database_url=SecretStr(db.dsn),
            local_storage_dir=storage_dir,
            dashboard_session_secret=SecretStr("a-session-secret-for-the-dashboard-tests"),
            dashboard_viewer_password=SecretStr(VIEWER_PASSWORD),
            dashboard_operator_password=SecretStr(OPERATOR_PASSWORD),
            supabase_url=auth.url,
            supabase_anon_key=SecretStr("anon-key"),
            jwt_secret=SecretStr(JWT_SECRET),
            jwks_url=None,
            storage_backend="local",
        )
        with running_dashboard(settings) as url:
            yield RunningDashboard(url, seeded, db, auth)


# Module scope: Playwright's sync API runs an event loop in this thread while it lives, and every
# asyncio test after it in the same process would fail ("cannot be called from a running event loop").
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
