"""`vidanim doctor`, and the worker's own start check: every check, passing and failing."""

from __future__ import annotations

import http.server
import json
import threading

import jwt
import pytest
from typer.testing import CliRunner

from tests.support.fake_supabase_storage import FakeSupabaseStorage
from vidanim.cli import app
from vidanim.simulator import Simulator

runner = CliRunner()


@pytest.fixture
def sim():
    with Simulator(queue_seconds=0.01, run_seconds=0.01) as s:
        yield s


@pytest.fixture
def env(monkeypatch, db, tmp_path, sim):
    for key in ("VIDANIM_FAL_KEY", "VIDANIM_RUNWAY_API_SECRET", "VIDANIM_STORAGE_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDANIM_DATABASE_URL", db.dsn)
    monkeypatch.setenv("VIDANIM_FAL_KEY", sim.fal_key)
    monkeypatch.setenv("VIDANIM_FAL_QUEUE_URL", sim.base_url)
    monkeypatch.setenv("VIDANIM_RUNWAY_API_SECRET", sim.runway_secret)
    monkeypatch.setenv("VIDANIM_RUNWAY_BASE_URL", sim.base_url)
    monkeypatch.setenv("VIDANIM_LOCAL_STORAGE_DIR", str(tmp_path / "store"))
    return monkeypatch


def doctor() -> tuple[int, dict[str, dict]]:
    result = runner.invoke(app, ["doctor", "--json"])
    body = json.loads(result.output)
    return result.exit_code, {c["name"]: c for c in body["checks"]}


def test_a_healthy_deployment_passes_every_check(env, sim):
    code, checks = doctor()
    assert code == 0
    assert list(checks) == [
        "database reachable",
        "migrations current",
        "deployment checklist",
        "buckets present and private",
        "storage reachable",
        "provider fal",
        "provider runway",
        "fal webhooks",
    ]
    assert all(c["ok"] for name, c in checks.items() if name != "fal webhooks")
    assert checks["fal webhooks"]["ok"] is None, "off unless a public URL is set: nothing to check"
    assert "nothing billed" in checks["provider fal"]["detail"]
    assert checks["provider runway"]["detail"].startswith("10000 credits; gen4_turbo: maxConcurrentGenerations 5")
    assert sim.submissions == [], "no check creates a task"
    table = runner.invoke(app, ["doctor"])
    assert table.exit_code == 0
    assert "provider runway" in table.output


@pytest.mark.parametrize(
    ("setting", "value", "check", "detail"),
    [
        ("VIDANIM_FAL_KEY", "wrong", "provider fal", "credentials"),
        ("VIDANIM_RUNWAY_API_SECRET", "wrong", "provider runway", "credentials"),
    ],
)
def test_a_refused_provider_key_fails_its_check(env, setting, value, check, detail):
    env.setenv(setting, value)
    code, checks = doctor()
    assert code == 1
    assert checks[check]["ok"] is False
    assert detail in checks[check]["detail"]
    assert "wrong" not in checks[check]["detail"], "a key is never printed"


def test_a_runway_account_without_credits_fails_its_check(env, sim):
    sim.runway_credit_balance = 0
    code, checks = doctor()
    assert (code, checks["provider runway"]["ok"]) == (1, False)
    assert "no credits" in checks["provider runway"]["detail"]


def test_no_provider_configured_fails(env):
    env.delenv("VIDANIM_FAL_KEY")
    env.delenv("VIDANIM_RUNWAY_API_SECRET")
    code, checks = doctor()
    assert (code, checks["providers"]["ok"]) == (1, False)


def test_an_unreachable_database_fails_and_skips_what_needs_it(env):
    env.setenv("VIDANIM_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    code, checks = doctor()
    assert code == 1
    assert checks["database reachable"]["ok"] is False
    assert checks["storage reachable"]["ok"] is None


def test_pending_migrations_and_a_failing_checklist_fail(env, empty_dsn):
    import psycopg

    from vidanim.db.migrate import apply_compat

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        apply_compat(conn)
    env.setenv("VIDANIM_DATABASE_URL", empty_dsn)
    code, checks = doctor()
    assert code == 1
    assert checks["migrations current"]["ok"] is False
    assert "pending: 0001_vidanim_private_schema.sql" in checks["migrations current"]["detail"]
    assert checks["deployment checklist"]["ok"] is False
    assert checks["buckets present and private"]["detail"] == "missing video-inputs; missing video-outputs"


def test_a_public_bucket_fails(env, db):
    with db.connect() as conn:
        conn.execute("update storage.buckets set public = true where id = 'video-outputs'")
    code, checks = doctor()
    assert (code, checks["buckets present and private"]["detail"]) == (1, "video-outputs is public")


def test_storage_refusing_the_workers_key_fails(env, db):
    with FakeSupabaseStorage(db.dsn) as storage:
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", storage.url)
        # a service_role key of another project: well formed, refused by Storage
        other = jwt.encode({"role": "service_role"}, "another-projects-jwt-secret-32-chars!", algorithm="HS256")
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", other)
        code, checks = doctor()
        assert (code, checks["storage reachable"]["ok"]) == (1, False)
        assert "AccessDenied" in checks["storage reachable"]["detail"]
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", storage.service_key)
        code, checks = doctor()
        assert (code, checks["storage reachable"]["ok"]) == (0, True)


@pytest.mark.parametrize(
    ("key", "says"),
    [("anon", "holds the legacy anon key"), ("publishable", "holds a publishable key"), ("junk", "holds no Supabase")],
)
def test_a_storage_key_that_is_not_the_service_roles_fails_in_one_line_naming_the_variable(env, db, key, says):
    with FakeSupabaseStorage(db.dsn) as storage:
        value = {"anon": storage.anon_key, "publishable": "sb_publishable_abc", "junk": "not-the-key"}[key]
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", storage.url)
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", value)
        code, checks = doctor()
    assert (code, checks["storage reachable"]["ok"]) == (1, False)
    detail = checks["storage reachable"]["detail"]
    assert detail.startswith(f"VIDANIM_SUPABASE_SERVICE_ROLE_KEY {says}")
    assert "\n" not in detail


async def test_a_storage_key_that_cannot_see_what_storage_objects_holds_fails(db, tmp_path):
    from tests.support.seed import put_object
    from vidanim.doctor import storage_check
    from vidanim.settings import Settings
    from vidanim.storage.supabase import SupabaseStorage
    from vidanim.worker.db import open_pool

    with FakeSupabaseStorage(db.dsn) as fake, db.connect() as conn:
        put_object(conn, "video-outputs", "u/j.mp4", mimetype="video/mp4")
        pool = open_pool(db.dsn, size=1)
        await pool.open()
        settings = Settings(_env_file=None, database_url=db.dsn, storage_backend="supabase")
        try:
            for key, ok in ((fake.anon_key, False), (fake.service_key, True)):
                storage = SupabaseStorage(supabase_url=fake.url, service_role_key=key)
                check = await storage_check(settings, storage, pool)
                await storage.aclose()
                assert check.ok is ok, check.detail
                if not ok:
                    assert check.detail == (
                        "Storage's key cannot see video-outputs/u/j.mp4, which storage.objects holds: "
                        "VIDANIM_SUPABASE_SERVICE_ROLE_KEY is not the service role's key"
                    )
        finally:
            await pool.close()


def test_a_worker_whose_every_provider_fails_refuses_to_start_in_one_line(env):
    env.setenv("VIDANIM_FAL_KEY", "wrong")
    env.setenv("VIDANIM_RUNWAY_API_SECRET", "wrong")
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 1, "a refused configuration is a failure (1), not a usage error (2)"
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, "one clear line (the log has one event per check besides)"
    assert errors[0].startswith("error: every provider failed its check: provider fal: fal refused our account (401")
    assert "provider runway: runway refused our account (401" in errors[0]


def test_a_worker_with_one_healthy_provider_starts(env, db):
    env.setenv("VIDANIM_FAL_KEY", "wrong")
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 0, result.output


def test_with_webhooks_on_doctor_reads_fals_key_set(env, sim):
    env.setenv("VIDANIM_WEBHOOK_PUBLIC_URL", "https://hooks.example.test")
    env.setenv("VIDANIM_HTTP_PORT", "8080")
    env.setenv("VIDANIM_FAL_WEBHOOK_JWKS_URLS", sim.jwks_url)
    code, checks = doctor()
    assert code == 0
    assert checks["fal webhooks"]["ok"] is True
    assert checks["fal webhooks"]["detail"] == (
        "1 signing key(s) from fal's JWKS; deliveries to https://hooks.example.test/webhooks/fal/{job}?token=…"
    )


@pytest.mark.parametrize(
    ("settings", "detail"),
    [
        ({"VIDANIM_FAL_WEBHOOK_JWKS_URLS": "http://127.0.0.1:9/jwks.json"}, "no Ed25519 key from http://127.0.0.1:9"),
        ({"VIDANIM_HTTP_PORT": ""}, "needs VIDANIM_HTTP_PORT"),
    ],
)
def test_webhooks_that_cannot_work_fail_the_doctor(env, sim, settings, detail):
    env.setenv("VIDANIM_WEBHOOK_PUBLIC_URL", "https://hooks.example.test")
    env.setenv("VIDANIM_HTTP_PORT", "8080")
    env.setenv("VIDANIM_FAL_WEBHOOK_JWKS_URLS", sim.jwks_url)
    for key, value in settings.items():
        if value:
            env.setenv(key, value)
        else:
            env.delenv(key)
    code, checks = doctor()
    assert code == 1
    assert checks["fal webhooks"]["ok"] is False
    assert detail in checks["fal webhooks"]["detail"]


def test_a_worker_given_a_public_url_but_no_http_server_refuses_to_start_in_one_line(env):
    env.setenv("VIDANIM_WEBHOOK_PUBLIC_URL", "https://hooks.example.test")
    env.delenv("VIDANIM_HTTP_PORT", raising=False)
    result = runner.invoke(app, ["worker", "--until-idle"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: VIDANIM_WEBHOOK_PUBLIC_URL needs the worker's HTTP server: set VIDANIM_HTTP_PORT"
        " (and route the public URL to it)"
    ]


class ReportsEveryObject(http.server.BaseHTTPRequestHandler):
    """A Storage server that answers every object's info with an object: it holds them all, it says."""

    def do_GET(self) -> None:
        body = json.dumps({"name": self.path, "size": 1, "content_type": "image/png", "metadata": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


def test_a_storage_that_reports_an_object_it_does_not_hold_fails(env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReportsEveryObject)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", "sb_secret_any")
        code, checks = doctor()
    finally:
        server.shutdown()
        server.server_close()
    assert (code, checks["storage reachable"]) == (
        1,
        {**checks["storage reachable"], "ok": False, "detail": "Storage reported an object that does not exist"},
    )


def test_a_public_bucket_fails_the_bucket_check_itself_not_only_the_checklist(env, db):
    with db.connect() as conn:
        conn.execute("update storage.buckets set public = true where id = 'video-inputs'")
    code, checks = doctor()
    assert code == 1
    assert checks["buckets present and private"] == {
        **checks["buckets present and private"],
        "ok": False,
        "detail": "video-inputs is public",
    }


async def test_a_storage_key_that_cannot_see_an_input_image_storage_objects_holds_fails(db, tmp_path):
    from tests.support.seed import put_object
    from vidanim.doctor import storage_check
    from vidanim.settings import Settings
    from vidanim.storage.supabase import SupabaseStorage
    from vidanim.worker.db import open_pool

    with FakeSupabaseStorage(db.dsn) as fake, db.connect() as conn:
        put_object(conn, "video-inputs", "u/cat.png")  # no video yet: the input is the one object held
        pool = open_pool(db.dsn, size=1)
        await pool.open()
        settings = Settings(_env_file=None, database_url=db.dsn, storage_backend="supabase")
        try:
            storage = SupabaseStorage(supabase_url=fake.url, service_role_key=fake.anon_key)
            check = await storage_check(settings, storage, pool)
            await storage.aclose()
        finally:
            await pool.close()
    assert check.ok is False
    assert "cannot see video-inputs/u/cat.png" in check.detail
