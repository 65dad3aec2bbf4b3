"""What every command shares: settings, connections as a role, output, errors."""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, LiteralString

import psycopg
import typer
from psycopg.rows import dict_row

from vidanim.client import PostgresTransport, VidanimClient
from vidanim.errors import VidanimError, from_sqlstate
from vidanim.images import rules_for
from vidanim.settings import InvalidSetting, Settings, load_settings
from vidanim.storage.base import StorageError
from vidanim.storage.local import LocalSigner

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="VIDANIM_DATABASE_URL",
        show_envvar=True,
        show_default=False,
        help="PostgreSQL URL (direct or session-mode connection).",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SET_SERVICE_ROLE: LiteralString = "set local role service_role"
# undefined table, undefined function, invalid schema name: what a database without migrations answers
SCHEMA_MISSING = ("42P01", "42883", "3F000")
NO_SUCH_USER = "no such user: the id names no row of auth.users (check the user's id)"
NOT_MIGRATED = "the database has no vidanim schema, or an older one: run `vidanim db migrate` first"


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def settings(database_url: str | None) -> Settings:
    """The settings, or exit 2 with one line naming the variable at fault."""
    try:
        return load_settings(database_url)
    except InvalidSetting as exc:
        raise fail(str(exc), 2) from None


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn the errors a user can cause into one line and a non-zero exit, never a traceback."""
    try:
        yield
    except VidanimError as exc:
        if exc.sqlstate == "23503" and "user_id_fkey" in exc.message:
            raise fail(NO_SUCH_USER) from None
        if exc.sqlstate in SCHEMA_MISSING:
            raise fail(NOT_MIGRATED) from None
        raise fail(exc.message + (f" ({exc.hint})" if exc.hint else "")) from None
    except StorageError as exc:
        raise fail(f"storage: {exc}") from None
    except psycopg.OperationalError as exc:
        raise fail(f"cannot connect to the database: {str(exc).splitlines()[0]}") from None
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName):
        raise fail(NOT_MIGRATED) from None
    except psycopg.Error as exc:
        error = from_sqlstate(exc.sqlstate, exc.diag.message_primary or str(exc), hint=exc.diag.message_hint)
        raise fail(error.message) from None


@contextlib.contextmanager
def refused_values(option: str) -> Iterator[None]:
    """A value the database refuses as out of range (SQLSTATE 22023) is a usage error: exit 2."""
    try:
        yield
    except psycopg.errors.InvalidParameterValue as exc:
        raise fail(f"{option}: {exc.diag.message_primary or exc}", 2) from None


@contextlib.contextmanager
def as_service(s: Settings) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
    """One transaction as service_role, as the worker and operators act."""
    with (
        psycopg.connect(s.require_database_url(), autocommit=True, row_factory=dict_row) as conn,
        conn.transaction(),
        conn.cursor() as cur,
    ):
        cur.execute(SET_SERVICE_ROLE)
        yield cur


def user_client(s: Settings, user_id: uuid.UUID) -> VidanimClient:
    """The client acting as `user_id`, as PostgREST would for that user's token.

    Operators only: it needs a database login that may switch to `authenticated`.
    """
    signer = LocalSigner(
        s.local_storage_secret.get_secret_value() if s.local_storage_secret else None, s.local_storage_url
    )
    transport = PostgresTransport(
        s.require_database_url(),
        {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"},
        storage_root=s.local_storage_dir,
        signer=signer,
    )
    return VidanimClient(transport, image_rules=rules_for(s.provider_order()))


_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `45s`, `2w`."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise typer.BadParameter("use a number and a unit: 30d, 12h, 90m, 45s or 2w")
    n, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # money stays exact
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(jsonable(value), indent=2))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table."""
    cells = [
        [("" if c is None else (c.strftime("%Y-%m-%d %H:%M:%S") if isinstance(c, datetime) else str(c))) for c in row]
        for row in rows
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    typer.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
