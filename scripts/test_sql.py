"""Run the pgTAP suite (supabase/tests/*.test.sql) with pg_prove, under both grant modes.

    python scripts/test_sql.py                 # what `make test-sql` runs

On a Supabase stack the same files run with `supabase test db`. Here each grant
mode gets a fresh database on a throwaway cluster (or on TEST_DATABASE_URL's
server): the compat layer, the legacy default grants or none, every migration,
then `pg_prove`. Needs pgTAP for the server's major version (Debian:
postgresql-<major>-pgtap) and pg_prove (libtap-parser-sourcehandler-pgtap-perl).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from vidanim.db.embedded import EmbeddedPostgres
from vidanim.db.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
TESTS = sorted((ROOT / "supabase" / "tests").glob("*.test.sql"))


@contextlib.contextmanager
def server() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    with EmbeddedPostgres() as pg:
        yield pg.dsn()


def connection_args(dsn: str) -> list[str]:
    """pg_prove's own options: it does not take a connection URI."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    flags = {"host": "--host", "port": "--port", "user": "--username", "dbname": "--dbname"}
    return [f"{flag}={params[key]}" for key, flag in flags.items() if params.get(key)]


def main() -> int:
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        print("pg_prove not found: apt-get install libtap-parser-sourcehandler-pgtap-perl", file=sys.stderr)
        return 2
    failed = 0
    with server() as admin_dsn:
        for mode in ("modern", "legacy"):
            name = f"vidanim_pgtap_{mode}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            try:
                dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
                migrate(dsn, compat=True, legacy_grants=mode == "legacy")
                print(f"# pgTAP, {mode} grants", flush=True)
                result = subprocess.run([pg_prove, *connection_args(dsn), *map(str, TESTS)], check=False)
                failed += result.returncode != 0
            finally:
                with psycopg.connect(admin_dsn, autocommit=True) as admin:
                    admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
