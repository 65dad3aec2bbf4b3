"""The migration runner and the migrations themselves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from vidanim.db.migrate import MIGRATION_FILE, MigrationError, discover, migrate, status
from vidanim.db.paths import compat_dir, migrations_dir


def test_every_migration_file_matches_the_supabase_cli_pattern():
    files = sorted(p.name for p in migrations_dir().glob("*.sql"))
    assert files, "no migrations found"
    assert all(MIGRATION_FILE.match(f) for f in files), files
    assert files[-1] >= "0014_video_animation_hardening.sql"
    assert "0014_video_animation_hardening.sql" in files


def test_migrate_applies_everything_to_an_empty_postgres_then_is_a_no_op(empty_dsn):
    first = migrate(empty_dsn)
    assert first.compat_applied, "a plain PostgreSQL needs the compat layer"
    assert [m.filename for m in first.applied] == [m.filename for m in discover()]

    second = migrate(empty_dsn)
    assert not second.compat_applied, "the compat layer is not applied twice"
    assert second.applied == []
    assert all(done for _, done in status(empty_dsn))


def test_migrate_records_versions_where_the_supabase_cli_reads_them(empty_dsn):
    migrate(empty_dsn)
    with psycopg.connect(empty_dsn) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(m.version, m.name) for m in discover()]
    assert all(r[2] and "--" in r[2][0] for r in rows)


def test_a_failing_migration_is_rolled_back_and_named(empty_dsn, tmp_path: Path):
    for m in discover():
        shutil.copy(m.path, tmp_path / m.filename)
    (tmp_path / "9999_broken.sql").write_text("create table public.half_done (id int);\nselect 1/0;\n")
    with pytest.raises(MigrationError, match=r"9999_broken\.sql"):
        migrate(empty_dsn, directory=tmp_path)
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("select to_regclass('public.half_done')").fetchone() == (None,)
        versions = {r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")}
    assert "9999" not in versions
    assert "0014" in versions


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_migrations_apply_in_order_with_plain_psql(empty_dsn):
    files = [compat_dir() / "supabase_compat.sql", *(m.path for m in discover())]
    for path in files:
        result = subprocess.run(
            ["psql", empty_dsn, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute(
            "select to_regprocedure('public.request_video_animation(text,text,jsonb,text)') is not null"
        ).fetchone() == (True,)


def test_the_local_seed_applies_after_the_migrations(db, conn):
    seed = migrations_dir().parent / "seed.sql"
    conn.execute(seed.read_text())
    assert conn.execute("select count(*) from auth.users where email like '%@example.test'").fetchone() == (2,)
    assert conn.execute("select daily_limit, max_active_jobs from public.video_quota_defaults").fetchone() == (100, 10)
