"""Small helpers for the SQL API tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.support.postgrest import as_service, as_user

REQUEST = "select * from public.request_video_animation(%s, %s, %s, %s)"


@contextlib.contextmanager
def raises_sqlstate(sqlstate: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
    """Expect a database error with this SQLSTATE (and message pattern)."""
    with pytest.raises(psycopg.Error, match=match) as info:
        yield info
    assert info.value.sqlstate == sqlstate, f"expected {sqlstate}, got {info.value.sqlstate}: {info.value}"


def request_job(
    conn: psycopg.Connection[Any],
    user_id: uuid.UUID,
    path: str,
    prompt: str | None = "make it move",
    options: dict[str, Any] | None = None,
    client_request_id: str | None = None,
) -> dict[str, Any]:
    with as_user(conn, user_id) as cur:
        cur.execute(REQUEST, (path, prompt, psycopg.types.json.Jsonb(options or {}), client_request_id))
        row = cur.fetchone()
    assert row is not None
    return dict(row)


def service(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with as_service(conn) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def job_row(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("select * from public.video_jobs where id = %s", (job_id,))
        row = cur.fetchone()
    assert row is not None
    return dict(row)


def usage(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> int:
    row = conn.execute(
        "select coalesce(sum(used), 0) from public.video_quota_usage where user_id = %s", (user_id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def claim(conn: psycopg.Connection[Any], worker: str, limit: int = 10, lease: int = 300) -> list[dict[str, Any]]:
    return service(conn, "select * from public.claim_video_jobs(%s, %s, %s)", (worker, limit, lease))


def update_status(conn: psycopg.Connection[Any], job_id: uuid.UUID, status: str, **kw: Any) -> dict[str, Any]:
    params = {
        "p_provider": None,
        "p_provider_task_id": None,
        "p_provider_status": None,
        "p_output_video_path": None,
        "p_error_code": None,
        "p_error_message": None,
        "p_worker_id": None,
    }
    params.update({f"p_{k}": v for k, v in kw.items()})
    rows = service(
        conn,
        "select * from public.service_update_video_job_status(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (job_id, status, *params.values()),
    )
    return rows[0]
