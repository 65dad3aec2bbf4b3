"""Supabase's own CLI accepts vidanim: `db push`, `migration list` and `db lint` on a real database.

The CLI is the npm package `supabase` pinned in package.json (`make tools` installs
it into node_modules/). These commands work against any database URL; on loopback
the CLI needs `?sslmode=disable`. Where the CLI is not installed the tests are
skipped, unless VIDANIM_REQUIRE_SUPABASE_CLI=1 (CI sets it), which turns a missing
CLI into a failure. `db lint` runs plpgsql_check, which must be available to the
server (Debian: postgresql-<major>-plpgsql-check).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from vidanim.cli import app
from vidanim.db.migrate import apply_compat, discover, migrate

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.supabase_cli


def _required() -> bool:
    return os.environ.get("VIDANIM_REQUIRE_SUPABASE_CLI") == "1"


@pytest.fixture(scope="module")
def supabase() -> str:
    found = os.environ.get("VIDANIM_SUPABASE_CLI") or shutil.which("supabase", path=str(ROOT / "node_modules" / ".bin"))
    if not found:
        if _required():
            pytest.fail("the Supabase CLI is required but not installed: run `make tools`")
        pytest.skip("the Supabase CLI is not installed (`make tools`)")
    return found


def cli(supabase: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [supabase, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL
    )


def cli_url(dsn: str) -> str:
    """The CLI's form of a loopback URL: a URI with TLS off."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}?sslmode=disable"


def migration_list(supabase: str, dsn: str) -> list[tuple[str, str]]:
    """(local, remote) version pairs as `supabase migration list` prints them."""
    result = cli(supabase, "migration", "list", "--db-url", cli_url(dsn))
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines():
        cells = [c.strip().strip("`").strip() for c in line.split("|")]
        if len(cells) == 3 and cells[0] != "Local" and not set(cells[0]) <= {"-"}:
            rows.append((cells[0], cells[1]))
    return rows


def test_db_push_applies_every_migration_and_vidanim_agrees(supabase, empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        apply_compat(conn)
    pushed = cli(supabase, "db", "push", "--db-url", cli_url(empty_dsn), "--yes")
    assert pushed.returncode == 0, pushed.stderr
    for migration in discover():
        assert f"Applying migration {migration.filename}" in pushed.stdout + pushed.stderr

    status = CliRunner().invoke(app, ["db", "status", "--database-url", empty_dsn])
    assert status.exit_code == 0, status.output
    assert "PENDING" not in status.output
    assert "[MISSING]" not in status.output
    assert migrate(empty_dsn).applied == [], "vidanim db migrate finds nothing left to apply"


def test_migration_list_agrees_with_vidanim_db_migrate(supabase, empty_dsn):
    versions = [m.version for m in discover()]
    assert migration_list(supabase, empty_dsn) == [(v, "") for v in versions]
    migrate(empty_dsn)
    assert migration_list(supabase, empty_dsn) == [(v, v) for v in versions]


def _lint(supabase: str, dsn: str) -> subprocess.CompletedProcess[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select count(*) from pg_available_extensions where name = 'plpgsql_check'").fetchone()
    if not row or not row[0]:
        if _required():
            pytest.fail("plpgsql_check is not available to this server (postgresql-<major>-plpgsql-check)")
        pytest.skip("plpgsql_check is not available to this server")
    return cli(supabase, "db", "lint", "--db-url", cli_url(dsn), "--level", "warning", "--fail-on", "warning")


def test_db_lint_finds_nothing_in_our_schemas(supabase, empty_dsn):
    migrate(empty_dsn)
    result = _lint(supabase, empty_dsn)
    assert result.returncode == 0, result.stdout + result.stderr
    for schema in ("public", "vidanim_private", "storage", "auth"):
        assert f"Linting schema: {schema}" in result.stderr + result.stdout
    assert "No schema errors found" in result.stdout + result.stderr


def test_db_lint_fails_on_a_deliberately_broken_function(supabase, empty_dsn):
    migrate(empty_dsn)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute(
            "create function vidanim_private.broken() returns bigint language plpgsql"
            " as $$ begin return (select count(*) from public.no_such_table); end $$"
        )
    result = _lint(supabase, empty_dsn)
    assert result.returncode != 0
    assert "vidanim_private.broken" in result.stdout
    assert 'relation \\"public.no_such_table\\" does not exist' in result.stdout
