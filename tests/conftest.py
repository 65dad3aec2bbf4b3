"""Shared fixtures: a real PostgreSQL, migrated once per grant mode, cloned per test.

Every test that touches SQL runs on a real PostgreSQL. The server comes from
tests/support/server.py. For each grant mode a template database is built once
(compat layer, optionally the legacy default grants, then every migration through
the package's own runner); each test gets a fresh copy (CREATE DATABASE ...
TEMPLATE), so tests are independent and fast.

Grant modes: `modern` (Supabase since 2026: nothing granted by default) and
`legacy` (older projects: every new public object granted to anon, authenticated
and service_role). Every test using `db` (every test that touches SQL) runs under both,
but for the scenarios only the service role acts in (tests/support/grant_modes.py).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.server import postgres_server
from vidanim.db.migrate import migrate

GRANT_MODES = ("modern", "legacy")
_counter = itertools.count()


@dataclass(frozen=True)
class Database:
    """A migrated database of its own for one test."""

    dsn: str
    grant_mode: str

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=dbname)


@pytest.fixture(autouse=True)
def _vidanim_log_handlers() -> Iterator[None]:
    """A CLI test configures logging onto its runner's stderr, closed when it ends: put back
    the handlers it found, so later tests do not log into a closed stream."""
    loggers = [logging.getLogger(), logging.getLogger("vidanim")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    logging.captureWarnings(False)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def templates(pg_admin_dsn: str) -> dict[str, str]:
    """Template database name per grant mode, each migrated once."""
    names = {}
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for mode in GRANT_MODES:
            name = f"vidanim_tpl_{mode}_{uuid.uuid4().hex[:8]}"
            admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            migrate(_dsn_for(pg_admin_dsn, name), compat=True, legacy_grants=mode == "legacy")
            names[mode] = name
    return names


def _clone(pg_admin_dsn: str, template: str) -> str:
    name = f"vidanim_t{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template)))
    return name


def _drop(pg_admin_dsn: str, name: str) -> None:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(params=GRANT_MODES)
def db(request: pytest.FixtureRequest, pg_admin_dsn: str, templates: dict[str, str]) -> Iterator[Database]:
    """A fresh migrated database, once per grant mode."""
    mode: str = request.param
    name = _clone(pg_admin_dsn, templates[mode])
    try:
        yield Database(dsn=_dsn_for(pg_admin_dsn, name), grant_mode=mode)
    finally:
        _drop(pg_admin_dsn, name)


@pytest.fixture
def conn(db: Database) -> Iterator[psycopg.Connection[Any]]:
    """An admin (superuser) connection to the test's database, autocommit."""
    with db.connect() as connection:
        yield connection


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A brand-new empty database (no compat layer, no migrations)."""
    name = f"vidanim_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield _dsn_for(pg_admin_dsn, name)
    finally:
        _drop(pg_admin_dsn, name)
