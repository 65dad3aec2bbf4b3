"""The hardening summary's deployment checklist, run against a live database.

Each check is a named query returning one boolean; `run()` says which pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg

_CHECK_HEADER = re.compile(r"^-- check: (.+)$", re.MULTILINE)


def _load(path: Path) -> tuple[tuple[str, LiteralString], ...]:
    parts = _CHECK_HEADER.split(path.read_text(encoding="utf-8"))[1:]
    # The file is part of this package, never user input.
    pairs = zip(parts[::2], parts[1::2], strict=True)
    return tuple((name.strip(), cast(LiteralString, query.strip())) for name, query in pairs)


CHECKS = _load(Path(__file__).with_name("checklist.sql"))


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    error: str | None = None


def run(conn: psycopg.Connection[tuple[Any, ...]]) -> list[CheckResult]:
    results = []
    for name, query in CHECKS:
        try:
            with conn.transaction():
                row = conn.execute(query).fetchone()
            results.append(CheckResult(name, bool(row and row[0])))
        except psycopg.Error as exc:
            results.append(CheckResult(name, False, exc.diag.message_primary or str(exc)))
    return results
