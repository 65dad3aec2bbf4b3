"""Test data written as an admin, the way Supabase Auth and Storage would write it."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from tests.support.postgrest import as_service


def create_user(conn: psycopg.Connection[Any], *, anonymous: bool = False) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, aud, role, email, is_anonymous) values (%s, 'authenticated', 'authenticated', %s, %s)",
        (user_id, f"{user_id.hex[:8]}@example.test", anonymous),
    )
    return user_id


def put_object(
    conn: psycopg.Connection[Any],
    bucket: str,
    name: str,
    *,
    owner: uuid.UUID | None = None,
    mimetype: str = "image/png",
) -> None:
    """Record an object as the Storage server does after an upload."""
    conn.execute(
        "insert into storage.objects (bucket_id, name, owner_id, metadata) values (%s, %s, %s, %s)",
        (bucket, name, str(owner) if owner else None, psycopg.types.json.Jsonb({"mimetype": mimetype, "size": 100})),
    )


def put_input_image(conn: psycopg.Connection[Any], user_id: uuid.UUID, name: str = "cat.png") -> str:
    path = f"{user_id}/{name}"
    put_object(conn, "video-inputs", path, owner=user_id)
    return path


def set_limits(conn: psycopg.Connection[Any], user_id: uuid.UUID, daily: int | None, active: int | None) -> None:
    with as_service(conn) as cur:
        cur.execute("select public.set_video_quota_limits(%s, %s, %s)", (user_id, daily, active))
