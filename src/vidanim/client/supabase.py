"""Supabase transport: PostgREST RPC and Storage through supabase-py, as the user.

The user's access token goes in the `Authorization` header of every PostgREST and
Storage request (the project's anon key stays the `apikey`), so Supabase verifies it
and applies RLS and the storage policies. PostgREST's error body (`code`, `message`,
`details`, `hint`) and Storage's (`statusCode`, `error`, `message`) are mapped to
`vidanim.errors`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

from vidanim.errors import NotSignedIn, VidanimError, from_sqlstate
from vidanim.storage.base import SignedUrl, StorageError

FUNCTIONS = ("request_video_animation", "cancel_video_job", "get_video_quota", "get_video_input_limits")


def _api_error(exc: Exception) -> VidanimError:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    details = getattr(exc, "details", None)
    hint = getattr(exc, "hint", None)
    if code in (None, "") and "JWT" in str(message):
        return NotSignedIn(str(message))
    if isinstance(code, str) and code.startswith("PGRST3"):  # JWT problems
        return NotSignedIn(str(message))
    return from_sqlstate(str(code) if code else None, str(message), detail=details, hint=hint)


def _rows(data: Any) -> list[dict[str, Any]]:
    """PostgREST answers an object for a function returning one row, else a list."""
    if isinstance(data, dict):
        return [data]
    return [r for r in (data or []) if isinstance(r, dict)]


class SupabaseTransport:
    def __init__(self, supabase_url: str, anon_key: str, access_token: str):
        from supabase import ClientOptions, create_client

        # Who the user is, for object names; Supabase itself verifies the token.
        claims = jwt.decode(access_token, options={"verify_signature": False})
        if "sub" not in claims:
            raise NotSignedIn("the access token names no user")
        self._user_id = uuid.UUID(str(claims["sub"]))
        # One HTTP client of our own for PostgREST and Storage, so close() releases it.
        self._http = httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0))
        self.client = create_client(
            supabase_url,
            anon_key,
            options=ClientOptions(headers={"Authorization": f"Bearer {access_token}"}, httpx_client=self._http),
        )

    @property
    def user_id(self) -> uuid.UUID:
        return self._user_id

    def rpc(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from postgrest.exceptions import APIError

        if function not in FUNCTIONS:
            raise VidanimError(f"unknown function {function}")
        try:
            data = self.client.rpc(function, params).execute().data
        except APIError as exc:
            raise _api_error(exc) from None
        return _rows(data)

    def jobs(self, job_id: uuid.UUID | None = None, limit: int = 50) -> list[dict[str, Any]]:
        from postgrest.exceptions import APIError

        query = self.client.table("video_jobs").select("*")
        query = query.eq("id", str(job_id)) if job_id else query.order("created_at", desc=True).limit(limit)
        try:
            return _rows(query.execute().data)
        except APIError as exc:
            raise _api_error(exc) from None

    def events(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        from postgrest.exceptions import APIError

        try:
            events = self.client.table("video_job_events").select("*").eq("job_id", str(job_id)).order("id")
            return _rows(events.execute().data)
        except APIError as exc:
            raise _api_error(exc) from None

    def upload(self, bucket: str, path: str, data: bytes, content_type: str) -> None:
        from storage3.exceptions import StorageApiError

        try:
            self.client.storage.from_(bucket).upload(path, data, {"content-type": content_type, "upsert": "false"})
        except StorageApiError as exc:
            raise StorageError(f"upload refused: {exc.message}", status=int(exc.status or 400)) from None

    def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        from storage3.exceptions import StorageApiError

        try:
            signed = self.client.storage.from_(bucket).create_signed_url(path, expires_in)
        except StorageApiError as exc:
            raise StorageError(f"cannot sign {bucket}/{path}: {exc.message}", status=int(exc.status or 400)) from None
        url = signed.get("signedURL") or signed.get("signedUrl")
        if not url:
            raise StorageError(f"Storage returned no signed URL for {bucket}/{path}", status=502)
        return SignedUrl(str(url), datetime.now(UTC) + timedelta(seconds=expires_in))

    def close(self) -> None:
        self._http.close()
