"""Act on the database exactly as PostgREST does for one request.

PostgREST runs each request in one transaction and, inside it, sets the role and
the JWT claims locally: `set_config('role', ..., true)` and
`set_config('request.jwt.claims', ..., true)` (PreQuery.hs txVarQuery). These
helpers do the same, so RLS, grants and auth.uid() behave as in production.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row

SET_REQUEST_CONTEXT = "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"


def user_claims(user_id: uuid.UUID | str, **extra: Any) -> dict[str, Any]:
    """The claims Supabase Auth puts in a signed-in user's access token."""
    return {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "is_anonymous": False,
        **extra,
    }


@contextlib.contextmanager
def request(
    conn: psycopg.Connection[Any], role: str, claims: dict[str, Any] | None = None, *, commit: bool = True
) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
    """One PostgREST request: a transaction with role and claims set locally.

    Errors propagate as psycopg errors and roll the transaction back, as PostgREST does.
    """
    claims = {"role": role, **(claims or {})}
    with conn.transaction(force_rollback=not commit), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(SET_REQUEST_CONTEXT, (role, json.dumps(claims)))
        yield cur


def as_user(conn: psycopg.Connection[Any], user_id: uuid.UUID | str, **claims: Any) -> Any:
    return request(conn, "authenticated", user_claims(user_id, **claims))


def as_anon(conn: psycopg.Connection[Any]) -> Any:
    return request(conn, "anon", {})


def as_service(conn: psycopg.Connection[Any]) -> Any:
    return request(conn, "service_role", {})
