"""`vidanim db migrate|status` through typer's runner, against a real database."""

from __future__ import annotations

import json

import psycopg
from typer.testing import CliRunner

from vidanim.cli import app
from vidanim.db.migrate import discover

runner = CliRunner()


def test_migrate_then_status_reports_everything_applied_and_checked(empty_dsn):
    first = runner.invoke(app, ["db", "migrate", "--database-url", empty_dsn])
    assert first.exit_code == 0, first.output
    assert "Supabase compatibility layer" in first.output
    assert "applied 0014_video_animation_hardening.sql" in first.output

    again = runner.invoke(app, ["db", "migrate", "--database-url", empty_dsn, "--json"])
    assert again.exit_code == 0
    assert json.loads(again.output) == {"compat_applied": False, "applied": []}

    status = runner.invoke(app, ["db", "status", "--database-url", empty_dsn, "--json"])
    assert status.exit_code == 0, status.output
    body = json.loads(status.output)
    assert [m["file"] for m in body["migrations"]] == [m.filename for m in discover()]
    assert all(m["applied"] for m in body["migrations"])
    assert body["checks"]
    assert all(c["ok"] for c in body["checks"])


def test_status_names_what_is_missing_on_an_unmigrated_database(empty_dsn):
    result = runner.invoke(app, ["db", "status", "--database-url", empty_dsn])
    assert result.exit_code == 1
    assert "PENDING  0014_video_animation_hardening.sql" in result.output
    assert "[MISSING] client_request_id column on video_jobs" in result.output


def test_status_names_a_dropped_policy_fix_or_public_bucket(empty_dsn):
    runner.invoke(app, ["db", "migrate", "--database-url", empty_dsn])
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("update storage.buckets set public = true where id = 'video-outputs'")
        conn.execute(
            'create policy "Users can update their own video jobs" on public.video_jobs for update'
            " using (user_id = (select auth.uid()))"
        )
    result = runner.invoke(app, ["db", "status", "--database-url", empty_dsn])
    assert result.exit_code == 1
    assert "[MISSING] no client write policy on video_jobs" in result.output
    assert "[MISSING] buckets video-inputs and video-outputs exist and are private" in result.output


def test_without_a_database_url_the_error_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("VIDANIM_DATABASE_URL", raising=False)
    monkeypatch.chdir("/")
    result = runner.invoke(app, ["db", "migrate"])
    assert result.exit_code == 2
    assert "error: no database configured" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_database_is_a_one_line_error():
    result = runner.invoke(app, ["db", "migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"])
    assert result.exit_code == 1
    assert "error: cannot connect to the database" in result.output
    assert "Traceback" not in result.output


def test_a_failing_migration_is_reported_without_a_traceback(empty_dsn, monkeypatch, tmp_path):
    (tmp_path / "0001_bad.sql").write_text("select * from no_such_table;")
    monkeypatch.setattr("vidanim.db.migrate.migrations_dir", lambda: tmp_path)
    result = runner.invoke(app, ["db", "migrate", "--database-url", empty_dsn])
    assert result.exit_code == 1
    assert "0001_bad.sql" in result.output
    assert "no_such_table" in result.output
