"""Operator and user commands through typer's runner, on a real database."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from tests.db.helpers import claim, request_job, update_status
from tests.support.fake_supabase_storage import FakeSupabaseStorage
from tests.support.image_cases import REFUSED
from tests.support.images import PNG
from tests.support.seed import create_user, put_input_image, put_object, set_limits
from vidanim.cli import app

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, db, tmp_path):
    for key in ("VIDANIM_FAL_KEY", "VIDANIM_RUNWAY_API_SECRET", "VIDANIM_ACCESS_TOKEN", "VIDANIM_JWT_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDANIM_DATABASE_URL", db.dsn)
    monkeypatch.setenv("VIDANIM_LOCAL_STORAGE_DIR", str(tmp_path / "store"))
    return monkeypatch


@pytest.fixture
def conn(db):
    with db.connect() as c:
        yield c


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _processing(conn, job_id):
    claim(conn, "w")
    update_status(conn, job_id, "processing", provider="fal", provider_task_id="t", worker_id="w")


def _complete(conn, user, job_id, store=None):
    _processing(conn, job_id)
    path = f"{user}/{job_id}.mp4"
    put_object(conn, "video-outputs", path, mimetype="video/mp4")
    if store is not None:
        file = store / "video-outputs" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(b"\0\0\0\x1cftypisom")
    update_status(conn, job_id, "completed", output_video_path=path, worker_id="w")


def finish_first_job_of(db, user, finish, *, delay=0.0):
    """A stand-in worker thread: waits for the user's job, then ends it with `finish(conn, job_id)`."""

    def run() -> None:
        with db.connect() as c:
            for _ in range(200):
                row = c.execute("select id from public.video_jobs where user_id = %s", (user,)).fetchone()
                if row:
                    time.sleep(delay)
                    finish(c, row[0])
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["db"],
        ["jobs"],
        ["quota"],
        ["storage"],
        ["animate"],
        ["worker"],
        ["demo"],
        ["simulator"],
        ["jobs", "retry"],
        ["storage", "cleanup"],
        ["budget"],
        ["budget", "set"],
        ["submissions"],
        ["submissions", "pause"],
        ["dashboard"],
    ],
)
def test_every_command_explains_itself(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_jobs_list_shows_every_users_jobs_and_filters(env, conn):
    alice, bob = create_user(conn), create_user(conn)
    a = request_job(conn, alice, put_input_image(conn, alice))
    b = request_job(conn, bob, put_input_image(conn, bob))
    human = invoke("jobs", "list")
    assert human.exit_code == 0, human.output
    assert str(a["id"]) in human.output
    assert str(b["id"]) in human.output
    assert human.output.splitlines()[0].split()[:3] == ["ID", "USER", "STATUS"]
    only_bob = json.loads(invoke("jobs", "list", "--user", str(bob), "--json").output)
    assert [j["id"] for j in only_bob] == [str(b["id"])]
    assert json.loads(invoke("jobs", "list", "--status", "failed", "--json").output) == []
    bad = invoke("jobs", "list", "--status", "done")
    assert bad.exit_code == 1
    assert "error: unknown status 'done'" in bad.output
    assert "Traceback" not in bad.output


def test_jobs_show_prints_the_timeline(env, conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user), prompt="hello")
    _processing(conn, job["id"])
    result = invoke("jobs", "show", str(job["id"]))
    assert result.exit_code == 0, result.output
    assert "prompt: hello" in result.output
    assert "provider_submissions: 0" in result.output
    assert "IN_QUEUE" not in result.output
    body = json.loads(invoke("jobs", "show", str(job["id"]), "--json").output)
    assert [e["status"] for e in body["timeline"]] == ["queued", "processing"]
    assert body["job"]["provider_task_id"] == "t"
    missing = invoke("jobs", "show", str(uuid.uuid4()))
    assert missing.exit_code == 1
    assert "not found" in missing.output
    invalid = invoke("jobs", "show", "not-a-uuid")
    assert invalid.exit_code == 2


def test_jobs_cancel_acts_for_the_user_and_refuses_an_ended_job(env, conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    result = invoke("jobs", "cancel", str(job["id"]), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "canceled"
    again = invoke("jobs", "cancel", str(job["id"]))
    assert again.exit_code == 1
    assert "already ended" in again.output


def test_jobs_retry_makes_one_new_job_from_a_failed_one(env, conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user), prompt="again", options={"duration": 5})
    update_status(conn, job["id"], "failed", error_code="x", error_message="boom")
    first = json.loads(invoke("jobs", "retry", str(job["id"]), "--json").output)
    second = json.loads(invoke("jobs", "retry", str(job["id"]), "--json").output)
    assert first["id"] == second["id"] != str(job["id"])
    assert (first["status"], first["prompt"], first["options"]) == ("queued", "again", {"duration": 5})
    queued = invoke("jobs", "retry", first["id"])
    assert queued.exit_code == 1
    assert "only failed or canceled jobs" in queued.output


def test_quota_show_set_reset(env, conn):
    user = create_user(conn)
    request_job(conn, user, put_input_image(conn, user))
    assert invoke("quota", "set", str(user), "--daily", "3", "--active", "2").exit_code == 0
    shown = json.loads(invoke("quota", "show", str(user), "--json").output)
    assert (shown["daily_limit"], shown["used"], shown["max_active_jobs"]) == (3, 1, 2)
    human = invoke("quota", "show", str(user))
    assert "DAILY LIMIT" in human.output
    assert invoke("quota", "reset", str(user)).exit_code == 0
    assert json.loads(invoke("quota", "show", str(user), "--json").output)["used"] == 0
    assert invoke("quota", "set", "--default", "--daily", "7", "--active", "4").exit_code == 0
    other = create_user(conn)
    assert json.loads(invoke("quota", "show", str(other), "--json").output)["daily_limit"] == 7


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["quota", "set", "--daily", "1"], 2, "give a user, or --default"),
        (["quota", "set", "{user}", "--daily", "-1"], 2, "daily limit must be between"),
        (["quota", "reset", "{nobody}"], 1, "not found"),
        (["quota", "reset", "{user}", "--day", "yesterday"], 2, "not a date"),
        (["quota", "set", "--default", "--daily", "5"], 2, "default max active jobs"),
        (["quota", "set", "{nobody}", "--daily", "3"], 1, "not found"),
    ],
)
def test_quota_errors_are_one_line(env, conn, args, code, message):
    user = create_user(conn)
    result = invoke(*[a.format(user=user, nobody=uuid.uuid4()) for a in args])
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_storage_cleanup_expires_old_videos_and_deletes_them(env, conn, tmp_path):
    user = create_user(conn)
    store = tmp_path / "store"
    old = request_job(conn, user, put_input_image(conn, user, "a.png"))
    new = request_job(conn, user, put_input_image(conn, user, "b.png"))
    _complete(conn, user, old["id"], store)
    _complete(conn, user, new["id"], store)
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set completed_at = now() - interval '40 days' where id = '{old['id']}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )
    dry = json.loads(invoke("storage", "cleanup", "--older-than", "30d", "--dry-run", "--json").output)
    assert [j["id"] for j in dry["jobs"]] == [str(old["id"])]
    assert (store / "video-outputs" / f"{user}/{old['id']}.mp4").exists(), "a dry run touches nothing"
    result = invoke("storage", "cleanup", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "expired 1 video(s)" in result.output
    assert not (store / "video-outputs" / f"{user}/{old['id']}.mp4").exists()
    assert (store / "video-outputs" / f"{user}/{new['id']}.mp4").exists()
    row = conn.execute(
        "select status, output_video_path, output_expired_at is not null from public.video_jobs where id = %s",
        (old["id"],),
    ).fetchone()
    assert row == ("completed", None, True)
    left = conn.execute("select count(*) from storage.objects where bucket_id = 'video-outputs'").fetchone()
    assert left == (1,)
    bad = invoke("storage", "cleanup", "--older-than", "a month")
    assert bad.exit_code == 2
    assert "30d" in bad.output


def _age(conn, job_id, days: int) -> None:
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set completed_at = now() - interval '{days} days' where id = '{job_id}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )


def test_storage_cleanup_names_what_storage_did_not_delete_and_those_jobs_keep_their_video(env, conn, db):
    user = create_user(conn)
    jobs = [request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "ab"]
    with FakeSupabaseStorage(db.dsn) as storage:
        for job in jobs:
            _processing(conn, job["id"])
            path = f"{user}/{job['id']}.mp4"
            stored = httpx.post(
                f"{storage.url}/storage/v1/object/video-outputs/{path}",
                content=b"\0\0\0\x1cftypisom",
                headers={"Authorization": f"Bearer {storage.service_key}", "Content-Type": "video/mp4"},
            )
            assert stored.status_code == 200
            update_status(conn, job["id"], "completed", output_video_path=path, worker_id="w")
            _age(conn, job["id"], 40)
        # A key that is not the service role's: Storage answers 200 [] and deletes nothing.
        env.setenv("VIDANIM_STORAGE_BACKEND", "supabase")
        env.setenv("VIDANIM_SUPABASE_URL", storage.url)
        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", storage.anon_key)
        result = invoke("storage", "cleanup", "--older-than", "30d")
        assert result.exit_code == 1
        names = sorted(f"{user}/{j['id']}.mp4" for j in jobs)
        assert "could not delete 2 video(s); their jobs keep them: " in result.output
        assert all(n in result.output for n in names)
        assert "VIDANIM_SUPABASE_SERVICE_ROLE_KEY holds the legacy anon key" in result.output
        rows = conn.execute(
            "select output_video_path, output_expired_at from public.video_jobs where user_id = %s order by 1", (user,)
        ).fetchall()
        assert rows == [(n, None) for n in names], "no job claims its video is gone while it is stored"
        assert len(storage.objects) == 2

        env.setenv("VIDANIM_SUPABASE_SERVICE_ROLE_KEY", storage.service_key)
        result = invoke("storage", "cleanup", "--older-than", "30d")
        assert result.exit_code == 0, result.output
        assert storage.objects == {}
        expired = conn.execute(
            "select count(*) from public.video_jobs where user_id = %s and output_expired_at is not null", (user,)
        ).fetchone()
        assert expired == (2,)


def test_animate_as_a_user_with_wait_follows_the_job_live(env, conn, tmp_path, db):
    user = create_user(conn)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)

    finish_first_job_of(db, user, lambda c, job_id: _complete(c, user, job_id, tmp_path / "store"), delay=0.3)
    result = invoke("animate", str(image), "--prompt", "wave", "--wait", "--user", str(user))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("job ")
    assert "  queued" in lines
    assert any(line.startswith("  completed") for line in lines)
    assert lines[-1].startswith("video: ")


def test_animate_with_an_access_token_verifies_it(env, conn, tmp_path):
    user = create_user(conn)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    secret = "cli-test-secret-" * 3
    env.setenv("VIDANIM_JWT_SECRET", secret)
    token = jwt.encode(
        {
            "sub": str(user),
            "role": "authenticated",
            "aud": "authenticated",
            "exp": datetime.now(UTC) + timedelta(minutes=5),
        },
        secret,
        algorithm="HS256",
    )
    result = invoke("animate", str(image), "--access-token", token, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["job"]["status"] == "queued"
    forged = jwt.encode(
        {"sub": str(user), "aud": "authenticated", "exp": datetime.now(UTC) + timedelta(minutes=5)},
        "another-secret-entirely-here-long-enough",
        algorithm="HS256",
    )
    refused = invoke("animate", str(image), "--access-token", forged)
    assert refused.exit_code == 1
    assert "invalid access token" in refused.output


def test_animate_reports_a_failed_job_with_exit_code_3(env, conn, tmp_path, db):
    user = create_user(conn)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)

    finish_first_job_of(
        db,
        user,
        lambda c, job_id: update_status(
            c, job_id, "failed", error_code="content_moderated", error_message="The image was rejected."
        ),
    )
    result = invoke("animate", str(image), "--wait", "--user", str(user))
    assert result.exit_code == 3
    assert "error: job failed: The image was rejected." in result.output


@pytest.mark.parametrize(
    ("args", "message"), [([], "say who asks"), (["--user", "{u}", "--access-token", "x"], "not both")]
)
def test_animate_needs_one_identity(env, conn, tmp_path, args, message):
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    user = create_user(conn)
    result = invoke("animate", str(image), *[a.format(u=user) for a in args])
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(("name", "data", "message"), REFUSED)
def test_animate_refuses_a_bad_image_in_one_line_before_anything_is_charged(env, conn, tmp_path, name, data, message):
    user = create_user(conn)
    image = tmp_path / name
    image.write_bytes(data)
    result = invoke("animate", str(image), "--user", str(user))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {message}")
    assert conn.execute("select count(*) from public.video_jobs").fetchone() == (0,)
    assert conn.execute("select count(*) from storage.objects").fetchone() == (0,)


def test_operator_commands_act_as_service_role_not_as_the_connecting_login(env, db):
    from vidanim.commands.common import as_service, settings

    with as_service(settings(db.dsn)) as cur:
        cur.execute("select current_user as role, session_user as login")
        row = cur.fetchone()
    assert row is not None
    assert row["role"] == "service_role"
    assert row["login"] != "service_role"


def test_budget_set_and_show(env, conn):
    assert invoke("budget", "show").output.startswith("daily cap: none")
    result = invoke("budget", "set", "--daily-usd", "25.5")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "daily cap: $25.50"
    shown = json.loads(invoke("budget", "show", "--json").output)
    assert shown == {"daily_cap_usd": "25.5000", "spend": []}
    assert invoke("budget", "set", "--unlimited").output.strip() == "daily cap: none"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--daily-usd", "lots"], 2, "must be an amount in USD"),
        (["--daily-usd", "-3"], 2, "daily cap must be between"),
        (["--daily-usd", "100000001"], 2, "daily cap must be between"),
        (["--daily-usd", "NaN"], 2, "must be an amount in USD"),
        (["--daily-usd", "Infinity"], 2, "must be an amount in USD, not 'Infinity'"),
        (["--daily-usd", "-inf"], 2, "must be an amount in USD, not '-inf'"),
        ([], 2, "--daily-usd AMOUNT or --unlimited"),
        (["--daily-usd", "5", "--unlimited"], 2, "--daily-usd AMOUNT or --unlimited"),
    ],
)
def test_budget_set_refusals_are_one_line(env, conn, args, code, message):
    result = invoke("budget", "set", *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("days", "code"), [("0", 2), ("1", 0), ("366", 0), ("367", 2)])
def test_budget_show_takes_1_to_366_days_and_refuses_either_side_as_a_usage_error(env, conn, days, code):
    result = invoke("budget", "show", "--days", days)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("amount", "shown"), [("0.001", "$0.001"), ("0.01", "$0.01"), ("1234.5678", "$1,234.5678"), ("0", "$0.00")]
)
def test_budget_set_prints_the_cap_the_database_stored_without_hiding_fractions_of_a_cent(env, conn, amount, shown):
    result = invoke("budget", "set", "--daily-usd", amount)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"daily cap: {shown}"
    assert invoke("budget", "show").output.startswith(f"daily cap: {shown}")


@pytest.mark.parametrize(("amount", "shown"), [("0.00005", "$0.0001"), ("1.23456", "$1.2346")])
def test_budget_set_prints_the_cap_as_the_database_rounded_it_not_as_it_was_typed(env, conn, amount, shown):
    result = invoke("budget", "set", "--daily-usd", amount)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"daily cap: {shown}"


def test_jobs_stats_counts_failures_and_durations_per_provider(env, conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    jobs = [request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "abc"]
    _complete(conn, user, jobs[0]["id"])
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set started_at = completed_at - interval '40 seconds' where id = '{jobs[0]['id']}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )
    update_status(conn, jobs[1]["id"], "failed", error_code="content_moderated", error_message="no")
    result = invoke("jobs", "stats", "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["by_status"] == [
        {"status": "completed", "jobs": 1},
        {"status": "failed", "jobs": 1},
        {"status": "queued", "jobs": 1},
    ]
    assert body["failures"] == [{"error_code": "content_moderated", "jobs": 1}]
    ((fal,),) = [[d] for d in body["durations"]]
    assert (fal["provider"], fal["completed"], round(fal["p50_seconds"]), round(fal["p95_seconds"])) == (
        "fal",
        1,
        40,
        40,
    )
    table = invoke("jobs", "stats")
    assert "content_moderated" in table.output
    assert "40.0 s" in table.output
    assert invoke("jobs", "stats", "--since", "forever").exit_code == 2


def test_budget_show_days_7_lists_exactly_the_last_7_utc_days(env, conn):
    today = conn.execute("select (now() at time zone 'utc')::date").fetchone()[0]
    for back in range(9):  # spend on each of the last 9 days, today included
        conn.execute(
            "insert into vidanim_private.video_spend (day, provider, committed_usd, submissions)"
            " values (%s, 'fal', 1, 1)",
            (today - timedelta(days=back),),
        )
    shown = json.loads(invoke("budget", "show", "--days", "7", "--json").output)
    assert [r["day"] for r in shown["spend"]] == [str(today - timedelta(days=back)) for back in range(7)]


def _completed_ago(conn, job_id, minutes: int) -> None:
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set completed_at = now() - interval '{minutes} minutes' where id = '{job_id}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )


def test_storage_cleanup_dry_run_lists_exactly_the_videos_a_run_would_expire(env, conn, tmp_path):
    user = create_user(conn)
    store = tmp_path / "store"
    gone, due, young = (request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "abc")
    for job in (gone, due, young):
        _complete(conn, user, job["id"], store)
    _completed_ago(conn, gone["id"], 40 * 24 * 60)
    assert invoke("storage", "cleanup", "--older-than", "30d").exit_code == 0  # its video is expired already
    month = 30 * 24 * 60
    _completed_ago(conn, due["id"], month + 1)  # a minute past the age
    _completed_ago(conn, young["id"], month - 1)  # a minute short of it
    dry = json.loads(invoke("storage", "cleanup", "--older-than", "30d", "--dry-run", "--json").output)
    assert [j["id"] for j in dry["jobs"]] == [str(due["id"])]
    real = json.loads(invoke("storage", "cleanup", "--older-than", "30d", "--json").output)
    assert [j["id"] for j in real["jobs"]] == [str(due["id"])], "the dry run named what the run did"


def test_storage_cleanup_dry_run_with_a_limit_lists_the_oldest_due_videos_as_a_run_expires(env, conn, tmp_path):
    user = create_user(conn)
    jobs = [request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "abc"]
    for days, job in zip((40, 50, 60), jobs, strict=True):
        _complete(conn, user, job["id"], tmp_path / "store")
        _completed_ago(conn, job["id"], days * 24 * 60)
    oldest = {str(jobs[1]["id"]), str(jobs[2]["id"])}
    args = ("storage", "cleanup", "--older-than", "30d", "--limit", "2", "--json")
    dry = json.loads(invoke(*args, "--dry-run").output)
    assert {j["id"] for j in dry["jobs"]} == oldest, "the two oldest of the three due"
    real = json.loads(invoke(*args).output)
    assert {j["id"] for j in real["jobs"]} == oldest, "the dry run named what the run did"


def test_jobs_retry_of_a_canceled_job_makes_a_new_job_and_of_a_completed_one_is_refused(env, conn, tmp_path):
    user = create_user(conn)
    canceled = request_job(conn, user, put_input_image(conn, user, "a.png"), prompt="again")
    assert json.loads(invoke("jobs", "cancel", str(canceled["id"]), "--json").output)["status"] == "canceled"
    retried = invoke("jobs", "retry", str(canceled["id"]), "--json")
    assert retried.exit_code == 0, retried.output
    new = json.loads(retried.output)
    assert (new["status"], new["prompt"]) == ("queued", "again")
    assert new["id"] != str(canceled["id"])
    done = request_job(conn, user, put_input_image(conn, user, "b.png"))
    _complete(conn, user, done["id"], tmp_path / "store")
    refused = invoke("jobs", "retry", str(done["id"]))
    assert refused.exit_code == 1
    assert f"video job {done['id']} is completed: only failed or canceled jobs are retried" in refused.output
    assert "Traceback" not in refused.output


def test_submissions_pause_and_resume_one_provider_and_every_provider_and_record_who(env, conn):
    paused = invoke("submissions", "pause", "--provider", "runway", "--reason", "bad day")
    assert paused.exit_code == 0, paused.output
    assert "submissions paused: runway" in paused.output
    invoke("submissions", "pause")
    shown = json.loads(invoke("submissions", "show", "--json").output)
    assert [(p["scope"], p["reason"]) for p in shown] == [("all", None), ("runway", "bad day")]
    resumed = invoke("submissions", "resume")
    assert resumed.exit_code == 0, resumed.output
    assert "still paused: runway" in resumed.output
    assert json.loads(invoke("submissions", "resume", "--provider", "runway", "--json").output)["still_paused"] == []
    actors = conn.execute("select actor, action from vidanim_private.video_operator_actions order by id").fetchall()
    assert [a for _, a in actors] == ["pause_submissions"] * 2 + ["resume_submissions"] * 2
    assert all(actor.startswith("cli:") for actor, _ in actors)


def test_submissions_pause_of_an_unknown_provider_is_a_clear_error(env):
    result = invoke("submissions", "pause", "--provider", "acme")
    assert result.exit_code == 2
    assert "unknown provider 'acme'" in result.output


def _ended_long_ago(conn, job_id, days: int) -> None:
    """The job was created and ended `days` ago; a completed one's video has expired since."""
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set created_at = now() - interval '{days} days 1 hour',"
        f" started_at = now() - interval '{days} days' - interval '40 seconds',"
        f" completed_at = now() - interval '{days} days',"
        " output_expired_at = case when status = 'completed' then now() end,"
        " output_video_path = case when status = 'completed' then null end"
        f" where id = '{job_id}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )


def test_jobs_prune_removes_old_ended_jobs_in_batches_and_dry_run_only_counts(env, conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    jobs = [request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "abcd"]
    for job in jobs[:3]:
        update_status(conn, job["id"], "failed", error_code="content_moderated", error_message="no")
        _ended_long_ago(conn, job["id"], 100)
    dry = invoke("jobs", "prune", "--older-than", "90d", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["jobs"] == 3
    (left,) = conn.execute("select count(*) from public.video_jobs").fetchone()
    assert left == 4, "a dry run deletes nothing"
    result = invoke("jobs", "prune", "--older-than", "90d", "--batch-size", "2", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert (body["jobs"], body["batches"]) == (3, 2)
    assert body["events"] >= 3
    (left,) = conn.execute("select id from public.video_jobs").fetchall()
    assert left == (jobs[3]["id"],), "the queued job stays"
    assert "pruned 0 job(s)" in invoke("jobs", "prune").output


def test_jobs_prune_refuses_a_cutoff_under_a_day_in_one_line(env, conn):
    result = invoke("jobs", "prune", "--older-than", "12h")
    assert result.exit_code != 0
    assert "at least 1 day" in result.output
    assert invoke("jobs", "prune", "--older-than", "soon").exit_code == 2


def test_jobs_stats_counts_pruned_jobs_from_their_daily_totals(env, conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    jobs = [request_job(conn, user, put_input_image(conn, user, f"{n}.png")) for n in "abc"]
    _complete(conn, user, jobs[0]["id"])
    update_status(conn, jobs[1]["id"], "failed", error_code="content_moderated", error_message="no")
    for job in jobs[:2]:
        _ended_long_ago(conn, job["id"], 100)
    before = json.loads(invoke("jobs", "stats", "--since", "365d", "--json").output)
    assert invoke("jobs", "prune", "--older-than", "90d").exit_code == 0
    (left,) = conn.execute("select count(*) from public.video_jobs").fetchone()
    assert left == 1, "the two ended jobs were pruned"
    after = json.loads(invoke("jobs", "stats", "--since", "365d", "--json").output)
    assert (
        after["by_status"]
        == before["by_status"]
        == [
            {"status": "completed", "jobs": 1},
            {"status": "failed", "jobs": 1},
            {"status": "queued", "jobs": 1},
        ]
    )
    assert after["failures"] == before["failures"] == [{"error_code": "content_moderated", "jobs": 1}]
    ((fal,),) = [[d] for d in after["durations"]]
    assert (fal["provider"], fal["completed"], round(fal["p50_seconds"])) == ("fal", 1, 40)
    recent = json.loads(invoke("jobs", "stats", "--since", "30d", "--json").output)
    assert recent["by_status"] == [{"status": "queued", "jobs": 1}], "days before the window are not counted"
