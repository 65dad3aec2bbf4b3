"""What a user or operator gets wrong, or the machine refuses: one line that says what to do,
never a traceback; exit 2 for a usage error (arguments, settings), 1 for a failure."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid

import httpx
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from tests.db.helpers import request_job
from tests.support.fake_supabase_storage import FakeSupabaseStorage
from tests.support.images import PNG
from tests.support.seed import create_user, put_input_image
from vidanim.cli import app
from vidanim.simulator import Simulator

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, db, tmp_path):
    for key in list(os.environ):
        if key.startswith("VIDANIM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDANIM_DATABASE_URL", db.dsn)
    monkeypatch.setenv("VIDANIM_LOCAL_STORAGE_DIR", str(tmp_path / "store"))
    return monkeypatch


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("ts=")]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [["jobs", "list"], ["doctor"], ["worker"], ["db", "migrate"], ["db", "status"]])
def test_a_database_url_postgresql_cannot_parse_is_a_usage_error_naming_the_form_it_takes(env, command):
    line = one_line_error(invoke(*command, "--database-url", "notaurl"), 2)
    assert "postgresql://USER:PASSWORD@HOST:5432/DATABASE" in line


def test_a_database_url_in_the_environment_is_checked_as_the_option_is(env):
    env.setenv("VIDANIM_DATABASE_URL", "notaurl")
    assert "is not one PostgreSQL accepts" in one_line_error(invoke("jobs", "list"), 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("garbage", "VIDANIM_PRICES_USD_PER_SECOND is not valid JSON"),
        ('{"runway:gen4_turbo": "cheap"}', "VIDANIM_PRICES_USD_PER_SECOND: Input should be a valid number"),
    ],
)
@pytest.mark.parametrize("command", [["jobs", "list"], ["worker"]])
def test_a_malformed_price_table_names_its_variable(env, command, value, expected):
    env.setenv("VIDANIM_PRICES_USD_PER_SECOND", value)
    assert expected in one_line_error(invoke(*command), 2)


@pytest.mark.parametrize("command", [["jobs", "list"], ["worker"], ["dashboard"]])
def test_an_unknown_log_level_names_the_levels_it_takes(env, command):
    env.setenv("VIDANIM_LOG_LEVEL", "LOUD")
    line = one_line_error(invoke(*command), 2)
    assert "VIDANIM_LOG_LEVEL: use one of DEBUG, INFO, WARNING, ERROR, CRITICAL (got 'LOUD')" in line


def test_a_log_level_in_lower_case_is_accepted(env):
    env.setenv("VIDANIM_LOG_LEVEL", "debug")
    assert invoke("jobs", "list").exit_code == 0


def test_a_setting_out_of_range_names_the_variable_not_the_field(env):
    env.setenv("VIDANIM_WORKER_CONCURRENCY", "0")
    line = one_line_error(invoke("worker"), 2)
    assert line == "error: VIDANIM_WORKER_CONCURRENCY: Input should be greater than or equal to 1 (got '0')"


def test_a_secret_setting_is_never_echoed_in_its_error(env):
    env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", "")
    env.setenv("VIDANIM_FAL_WEBHOOK_USER_ID", "")
    line = one_line_error(invoke("jobs", "list"), 2)
    assert "VIDANIM_FAL_WEBHOOK_USER_ID" in line


def test_the_worker_takes_the_database_url_its_error_message_names(env, empty_dsn):
    env.delenv("VIDANIM_DATABASE_URL")
    line = one_line_error(invoke("worker"), 2)
    assert "set VIDANIM_DATABASE_URL or pass --database-url" in line
    # and it does accept --database-url: this one reaches the database (not migrated)
    line = one_line_error(invoke("worker", "--database-url", empty_dsn), 1)
    assert "run `vidanim db migrate`" in line


def test_the_worker_refuses_to_start_on_a_database_without_migrations_instead_of_failing_every_claim(env, empty_dsn):
    env.setenv("VIDANIM_DATABASE_URL", empty_dsn)
    env.setenv("VIDANIM_FAL_KEY", "k")
    line = one_line_error(invoke("worker", "--until-idle"), 1)
    assert "the database lacks" in line
    assert "run `vidanim db migrate`" in line


@pytest.mark.parametrize("command", [["jobs", "list"], ["budget", "show"], ["quota", "show", str(uuid.uuid4())]])
def test_a_command_on_a_database_without_migrations_says_to_migrate(env, empty_dsn, command):
    env.setenv("VIDANIM_DATABASE_URL", empty_dsn)
    line = one_line_error(invoke(*command), 1)
    assert line == "error: the database has no vidanim schema, or an older one: run `vidanim db migrate` first"


def test_doctor_on_a_database_without_migrations_says_it_is_reachable_and_to_migrate(env, empty_dsn):
    env.setenv("VIDANIM_DATABASE_URL", empty_dsn)
    result = invoke("doctor", "--database-url", empty_dsn)
    assert result.exit_code == 1
    lines = {line.split()[1]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert lines["database"].startswith("ok")
    assert "pending: run `vidanim db migrate`" in lines["migrations"]
    assert "skipped: the database is not migrated" in lines["storage"]
    assert "relation" not in result.output


def test_animate_for_an_unknown_user_says_so_instead_of_a_foreign_key_error(env, tmp_path):
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    line = one_line_error(invoke("animate", str(image), "--user", str(uuid.uuid4())), 1)
    assert line == "error: no such user: the id names no row of auth.users (check the user's id)"


def test_quota_set_for_an_unknown_user_names_it_and_a_known_one_is_set(env, db):
    unknown = uuid.uuid4()
    line = one_line_error(invoke("quota", "set", str(unknown), "--daily", "5"), 1)
    assert line == f"error: user {unknown} not found"
    with db.connect() as conn:
        known = create_user(conn)
    result = invoke("quota", "set", str(known), "--daily", "5")
    assert result.exit_code == 0, result.output
    assert f"quota of {known}: daily 5" in result.output


@pytest.fixture
def taken_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


@pytest.mark.parametrize(
    ("variable", "listener"), [("VIDANIM_OPERATOR_PORT", "operator"), ("VIDANIM_HTTP_PORT", "public")]
)
def test_a_worker_port_already_in_use_is_one_line_naming_its_variable(env, tmp_path, taken_port, variable, listener):
    with Simulator() as sim:
        env.setenv("VIDANIM_FAL_KEY", sim.fal_key)
        env.setenv("VIDANIM_FAL_QUEUE_URL", sim.base_url)
        env.setenv(variable, str(taken_port))
        line = one_line_error(invoke("worker", "--until-idle"), 1)
    assert line == (
        f"error: the {listener} listener cannot bind 127.0.0.1:{taken_port}: address already in use "
        f"(set {variable} to a free port, or 0 for any)"
    )


def test_a_dashboard_port_already_in_use_is_one_line(env, taken_port):
    line = one_line_error(invoke("dashboard", "--port", str(taken_port)), 1)
    assert f"the dashboard listener cannot bind 127.0.0.1:{taken_port}: address already in use" in line
    assert "VIDANIM_DASHBOARD_PORT" in line


def _commands(group, path=()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


@pytest.mark.parametrize("path", list(_commands(get_command(app))), ids=lambda p: " ".join(p) or "vidanim")
def test_help_shows_no_type_label_on_flags(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "--help" in result.output


def test_local_storage_defaults_to_the_users_data_directory_not_the_working_directory(monkeypatch, tmp_path):
    from vidanim.settings import Settings

    monkeypatch.delenv("VIDANIM_LOCAL_STORAGE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert Settings().local_storage_dir == tmp_path / "data" / "vidanim" / "storage"
    monkeypatch.setenv("VIDANIM_LOCAL_STORAGE_DIR", "relative/store")
    (tmp_path / "elsewhere").mkdir()
    assert Settings().local_storage_dir == tmp_path / "relative" / "store"
    assert Settings().local_storage_dir.is_absolute()


def test_ctrl_c_while_animate_waits_says_the_job_goes_on_and_how_to_follow_it(env, conn, db, tmp_path):
    user = create_user(conn)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidanim", "animate", str(image), "--user", str(user), "--wait"],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            # a shell's background job ignores SIGINT, and a child inherits that: this one must hear Ctrl-C
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    watchdog = threading.Timer(120, proc.kill)  # a hung child fails the test instead of hanging it
    watchdog.start()
    try:
        # it follows the job once it printed the request's line and then, from inside the wait, the
        # job's first state (a loaded machine may take a while; a fixed sleep lost that race)
        assert proc.stdout is not None
        first, state = proc.stdout.readline(), proc.stdout.readline()
        job = conn.execute("select id, status from public.video_jobs where user_id = %s", (user,)).fetchone()
        assert job is not None, (first, errors.read_text())
        assert first.startswith(f"job {job[0]} queued"), first
        assert state.strip() == "queued", state
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    err = errors.read_text()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    assert f"stopped following job {job[0]}; the job goes on (it is not canceled" in err
    assert f"`vidanim jobs show {job[0]}`" in err
    assert conn.execute("select status from public.video_jobs where id = %s", (job[0],)).fetchone() == ("queued",)


def test_jobs_list_shows_why_a_queued_job_waits(env, conn):
    user = create_user(conn)
    waiting = request_job(conn, user, put_input_image(conn, user, "a.png"))
    plain = request_job(conn, user, put_input_image(conn, user, "b.png"))
    conn.execute("update public.video_jobs set waiting_reason = 'budget_reached' where id = %s", (waiting["id"],))
    rows = {line.split()[0]: line for line in invoke("jobs", "list").output.splitlines()[1:]}
    assert "queued: budget_reached" in rows[str(waiting["id"])]
    assert "queued: " not in rows[str(plain["id"])]


def test_an_operators_cancel_is_recorded_as_the_operators_and_audited(env, conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    result = invoke("jobs", "cancel", str(job["id"]))
    assert result.exit_code == 0, result.output
    row = conn.execute("select status, error_code from public.video_jobs where id = %s", (job["id"],)).fetchone()
    assert row == ("canceled", "canceled_by_operator")
    audit = conn.execute(
        "select actor, action from vidanim_private.video_operator_actions order by id desc limit 1"
    ).fetchone()
    assert audit[1] == "cancel_job"
    assert audit[0].startswith("cli:")


def test_storage_cleanup_removes_input_images_no_active_job_needs_after_the_ttl(env, conn, tmp_path):
    user = create_user(conn)
    store = tmp_path / "store" / "video-inputs"
    names = {}
    for label in ("refused", "ended", "active", "fresh"):
        path = put_input_image(conn, user, f"{label}.png")
        (store / path).parent.mkdir(parents=True, exist_ok=True)
        (store / path).write_bytes(PNG)
        names[label] = path
    active = request_job(conn, user, names["active"])
    ended = request_job(conn, user, names["ended"])
    conn.execute("update public.video_jobs set status = 'canceled' where id = %s", (ended["id"],))
    conn.execute(
        "update storage.objects set created_at = now() - interval '31 days' where name = any(%s)",
        ([names["refused"], names["ended"], names["active"]],),
    )
    dry = invoke("storage", "cleanup", "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove 2 input image(s)" in dry.output
    result = invoke("storage", "cleanup", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "removed 2 input image(s)" in result.output
    left = {r[0] for r in conn.execute("select name from storage.objects where bucket_id = 'video-inputs'")}
    assert left == {names["active"], names["fresh"]}
    assert not (store / names["refused"]).exists()
    assert (store / names["active"]).exists()
    assert active["status"] == "queued"


def test_storage_cleanup_names_the_input_images_storage_did_not_delete_and_fails(env, conn, db):
    user = create_user(conn)
    with FakeSupabaseStorage(db.dsn) as storage:
        names = [f"{user}/{n}.png" for n in "ab"]
        for name in names:
            stored = httpx.post(
                f"{storage.url}/storage/v1/object/video-inputs/{name}",
                content=PNG,
                headers={"Authorization": f"Bearer {storage.service_key}", "Content-Type": "image/png"},
            )
            assert stored.status_code == 200, stored.text
        conn.execute(
            "update storage.objects set created_at = now() - interval '31 days' where name = any(%s)", (names,)
        )
        # A key that is not the service role's: Storage answers 200 [] and deletes nothing.
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", storage.url)
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", storage.anon_key)
        result = invoke("storage", "cleanup", "--older-than", "30d")
        assert result.exit_code == 1, result.output
        assert "removed 0 input image(s)" in result.output
        assert "could not delete 2 input image(s): " in result.output
        assert all(n in result.output for n in names)
        assert "VIDANIM_SUPABASE_SERVICE_ROLE_KEY holds the legacy anon key" in result.output
        assert len(storage.objects) == 2

        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", storage.service_key)
        result = invoke("storage", "cleanup", "--older-than", "30d")
        assert result.exit_code == 0, result.output
        assert "removed 2 input image(s)" in result.output
        assert storage.objects == {}


@pytest.mark.parametrize("url", ["postgresql://u:hunter2%zz@h/db", "postgresql://u:hunter2@[::1/db"])
def test_a_database_url_libpq_cannot_parse_never_echoes_its_password(env, url):
    line = one_line_error(invoke("jobs", "list", "--database-url", url), 2)
    assert "hunter2" not in line
    assert "not a valid URL" in line


def test_storage_cleanup_with_storage_settings_it_cannot_use_is_a_usage_error_and_expires_nothing(env, conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        " update public.video_jobs set status = 'completed', completed_at = now() - interval '40 days',"
        f" output_video_path = '{user}/{job['id']}.mp4' where id = '{job['id']}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )
    env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")  # and no VIDANIM_SUPABASE_URL
    line = one_line_error(invoke("storage", "cleanup", "--older-than", "30d"), 2)
    assert "VIDANIM_SUPABASE_URL" in line
    expired = conn.execute("select output_expired_at from public.video_jobs where id = %s", (job["id"],)).fetchone()
    assert expired == (None,), "a Storage that cannot be built deletes nothing, so no job is marked expired"
