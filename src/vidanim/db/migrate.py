"""Apply `supabase/migrations` in order, recording them as the Supabase CLI does.

Versions go to ``supabase_migrations.schema_migrations`` (version, statements,
name), the table `supabase db push` reads, so this runner and the CLI agree on
what is applied. On a plain PostgreSQL (no ``auth.users``) the Supabase
compatibility layer (`sql/supabase_compat.sql`) is applied first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg

from vidanim.db.paths import compat_dir, migrations_dir

# The Supabase CLI's own pattern for migration files (pkg/migration/file.go).
MIGRATION_FILE = re.compile(r"^([0-9]+)_(.*)\.sql$")

CREATE_HISTORY: LiteralString = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""
APPLIED_VERSIONS: LiteralString = "select version from supabase_migrations.schema_migrations"
HISTORY_EXISTS: LiteralString = "select to_regclass('supabase_migrations.schema_migrations') is not null"
RECORD_MIGRATION: LiteralString = (
    "insert into supabase_migrations.schema_migrations (version, statements, name) values (%s, %s, %s)"
)
NEEDS_COMPAT: LiteralString = "select to_regclass('auth.users') is null or to_regclass('storage.objects') is null"
# One migrator at a time per database, whatever tool starts it.
LOCK: LiteralString = "select pg_advisory_lock(hashtext('vidanim.migrate'))"
UNLOCK: LiteralString = "select pg_advisory_unlock(hashtext('vidanim.migrate'))"


def _project_sql(path: Path) -> LiteralString:
    # SQL files are part of this project, never user input: vouch for them once here.
    return cast(LiteralString, path.read_text(encoding="utf-8"))  # type: ignore[redundant-cast]


class MigrationError(RuntimeError):
    """A migration failed; nothing of it was applied."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    def sql(self) -> LiteralString:
        return _project_sql(self.path)


@dataclass(frozen=True)
class MigrateResult:
    compat_applied: bool
    applied: list[Migration]


def discover(directory: Path | None = None) -> list[Migration]:
    """Migration files of `directory`, in the lexical order the Supabase CLI applies them."""
    directory = directory or migrations_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(version=match.group(1), name=match.group(2), path=path))
    return found


def _run_file(conn: psycopg.Connection[tuple[Any, ...]], path: Path) -> None:
    try:
        with conn.transaction():
            conn.execute(_project_sql(path))
    except psycopg.Error as exc:
        raise MigrationError(f"{path.name}: {exc.diag.message_primary or exc}") from exc


def applied_versions(conn: psycopg.Connection[tuple[Any, ...]]) -> set[str]:
    row = conn.execute(HISTORY_EXISTS).fetchone()
    if not row or not row[0]:
        return set()
    return {str(r[0]) for r in conn.execute(APPLIED_VERSIONS).fetchall()}


def needs_compat(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
    row = conn.execute(NEEDS_COMPAT).fetchone()
    return bool(row and row[0])


def apply_compat(conn: psycopg.Connection[tuple[Any, ...]], *, legacy_grants: bool = False) -> None:
    """Make a plain PostgreSQL look like Supabase (roles, auth, storage)."""
    _run_file(conn, compat_dir() / "supabase_compat.sql")
    if legacy_grants:
        _run_file(conn, compat_dir() / "supabase_legacy_grants.sql")


@contextmanager
def _migration_lock(conn: psycopg.Connection[tuple[Any, ...]]) -> Iterator[None]:
    conn.execute(LOCK)
    try:
        yield
    finally:
        conn.execute(UNLOCK)


def migrate(
    dsn: str,
    *,
    directory: Path | None = None,
    compat: bool | None = None,
    legacy_grants: bool = False,
) -> MigrateResult:
    """Apply pending migrations, each in its own transaction.

    `compat`: None applies the compat layer only where the database is plain
    PostgreSQL; True and False force it. `legacy_grants` adds the pre-2026
    Supabase default grants with it (the test suite proves both modes).
    """
    with psycopg.connect(dsn, autocommit=True) as conn, _migration_lock(conn):
        do_compat = needs_compat(conn) if compat is None else compat
        if do_compat:
            apply_compat(conn, legacy_grants=legacy_grants)
        with conn.transaction():
            conn.execute(CREATE_HISTORY)
        done = applied_versions(conn)
        applied = []
        for migration in discover(directory):
            if migration.version in done:
                continue
            try:
                with conn.transaction():
                    conn.execute(migration.sql())
                    conn.execute(RECORD_MIGRATION, (migration.version, [migration.sql()], migration.name))
            except psycopg.Error as exc:
                raise MigrationError(
                    f"{migration.filename}: {exc.diag.message_primary or exc} (SQLSTATE {exc.sqlstate})"
                ) from exc
            applied.append(migration)
        return MigrateResult(compat_applied=do_compat, applied=applied)


def status(dsn: str, *, directory: Path | None = None) -> list[tuple[Migration, bool]]:
    """Every migration file with whether the database has it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = applied_versions(conn)
    return [(m, m.version in done) for m in discover(directory)]
