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

from vidanim.errors import InvalidInput, NotSignedIn, Unavailable, VidanimError, from_sqlstate
from vidanim.storage.base import SignedUrl, StorageError, check_object_name
from vidanim.supabase_keys import require_client_key

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


# What Storage says of a token it will not take (a 403 in the body's statusCode).
JWT_REFUSALS = ("jwt", "signature", "token")


def _storage_error(exc: Any, what: str) -> Exception:
    """storage3's StorageApiError as vidanim sees it: a bad token is NotSignedIn."""
    status = int(exc.status) if str(exc.status).isdigit() else 400
    message = str(exc.message)
    if status in (401, 403) and any(word in message.lower() for word in JWT_REFUSALS):
        return NotSignedIn(f"Storage refused the access token ({message}); sign in again")
    code = str(exc.code) if exc.code else None
    return StorageError(f"{what}: {message}", status=status, code=code)


def _check_name(path: str) -> None:
    """The object-name rules every transport applies (storage3 would strip a leading slash)."""
    try:
        check_object_name(path)
    except StorageError as exc:
        raise InvalidInput(f"{path!r} is not a valid object name") from exc


def _unreachable(exc: httpx.TransportError) -> Unavailable:
    return Unavailable(f"Supabase could not be reached ({type(exc).__name__}); try again later")


def _rows(data: Any) -> list[dict[str, Any]]:
    """PostgREST answers an object for a function returning one row, else a list."""
    if isinstance(data, dict):
        return [data]
    return [r for r in (data or []) if isinstance(r, dict)]


class SupabaseTransport:
    def __init__(self, supabase_url: str, anon_key: str, access_token: str):
        from supabase import ClientOptions, create_client

        # A secret key would act as the service role for whoever holds this client.
        require_client_key(anon_key, "the client's key (VIDANIM_SUPABASE_ANON_KEY)")
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
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None
        return _rows(data)

    def jobs(self, job_id: uuid.UUID | None = None, limit: int = 50) -> list[dict[str, Any]]:
        from postgrest.exceptions import APIError

        query = self.client.table("video_jobs").select("*")
        query = query.eq("id", str(job_id)) if job_id else query.order("created_at", desc=True).limit(limit)
        try:
            return _rows(query.execute().data)
        except APIError as exc:
            raise _api_error(exc) from None
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None

    def events(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        from postgrest.exceptions import APIError

        try:
            events = self.client.table("video_job_events").select("*").eq("job_id", str(job_id)).order("id")
            return _rows(events.execute().data)
        except APIError as exc:
            raise _api_error(exc) from None
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None

    def upload(self, bucket: str, path: str, data: bytes, content_type: str) -> None:
        from storage3.exceptions import StorageApiError

        _check_name(path)
        try:
            self.client.storage.from_(bucket).upload(path, data, {"content-type": content_type, "upsert": "false"})
        except StorageApiError as exc:
            raise _storage_error(exc, "upload refused") from None
        except ValueError as exc:  # storage3 refuses '.' and '..' segments itself
            raise InvalidInput(f"{path!r} is not a valid object name ({exc})") from None
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None

    def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        from storage3.exceptions import StorageApiError

        try:
            signed = self.client.storage.from_(bucket).create_signed_url(path, expires_in)
        except StorageApiError as exc:
            raise _storage_error(exc, f"cannot sign {bucket}/{path}") from None
        except ValueError as exc:
            raise InvalidInput(f"{path!r} is not a valid object name ({exc})") from None
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None
        url = signed.get("signedURL") or signed.get("signedUrl")
        if not url:
            raise StorageError(f"Storage returned no signed URL for {bucket}/{path}", status=502)
        return SignedUrl(str(url), datetime.now(UTC) + timedelta(seconds=expires_in))

    def close(self) -> None:
        self._http.close()
