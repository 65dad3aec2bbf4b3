"""Direct Postgres transport: act as the user exactly as PostgREST would.

The access token is verified first (signature, expiry, audience) with PyJWT: with
Supabase's legacy HS256 JWT secret, or with its JWKS signing keys (asymmetric keys
fetched from `{SUPABASE_URL}/auth/v1/.well-known/jwks.json`). Then every call runs in
its own transaction with `role` and `request.jwt.claims` set locally, as PostgREST's
request envelope does, so RLS and grants are exactly what they are over HTTP.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, LiteralString

import jwt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from vidanim.errors import InvalidInput, NotSignedIn, VidanimError, from_sqlstate
from vidanim.storage.base import SignedUrl, StorageError, check_object_name, entity_too_large, invalid_mime_type
from vidanim.storage.local import LocalSigner

SET_CONTEXT: LiteralString = "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"
# The SQL API, by name; arguments are always bound, never spliced.
RPC: dict[str, LiteralString] = {
    "request_video_animation": "select * from public.request_video_animation("
    "%(p_input_image_path)s, %(p_prompt)s, %(p_options)s, %(p_client_request_id)s)",
    "cancel_video_job": "select * from public.cancel_video_job(%(p_job_id)s)",
    "get_video_quota": "select * from public.get_video_quota()",
    "get_video_input_limits": "select * from public.get_video_input_limits()",
}
JOB: LiteralString = "select * from public.video_jobs where id = %s"
JOBS: LiteralString = "select * from public.video_jobs order by created_at desc limit %s"
EVENTS: LiteralString = "select * from public.video_job_events where job_id = %s order by id"
CAN_READ: LiteralString = "select 1 from storage.objects where bucket_id = %s and name = %s"
RECORD_UPLOAD: LiteralString = (
    "insert into storage.objects (bucket_id, name, owner_id, metadata) values (%s, %s, %s, %s)"
)
INPUT_LIMITS: LiteralString = "select file_size_limit, allowed_mime_types from public.get_video_input_limits()"


def verify_token(
    token: str, *, jwt_secret: str | None = None, jwks_url: str | None = None, audience: str = "authenticated"
) -> dict[str, Any]:
    """The token's claims if its signature, expiry and audience check out; else NotSignedIn."""
    try:
        if jwks_url:
            key: Any = jwt.PyJWKClient(jwks_url, cache_keys=True).get_signing_key_from_jwt(token).key
            algorithms = ["RS256", "ES256", "EdDSA"]
        elif jwt_secret:
            key, algorithms = jwt_secret, ["HS256"]
        else:
            raise NotSignedIn("no way to verify access tokens: configure the JWT secret or the JWKS URL")
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=algorithms, audience=audience, options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise NotSignedIn("the access token has expired; sign in again") from None
    except (jwt.PyJWTError, ValueError) as exc:
        raise NotSignedIn(f"invalid access token ({type(exc).__name__})") from None
    if claims.get("role") not in (None, "authenticated"):
        raise NotSignedIn("the access token is not a signed-in user's")
    return claims


def _error(exc: psycopg.Error) -> VidanimError:
    return from_sqlstate(
        exc.sqlstate, exc.diag.message_primary or str(exc), detail=exc.diag.message_detail, hint=exc.diag.message_hint
    )


class PostgresTransport:
    def __init__(
        self,
        dsn: str,
        claims: dict[str, Any],
        *,
        storage_root: Path | None = None,
        signer: LocalSigner | None = None,
    ):
        self.claims = {**claims, "role": "authenticated"}
        self._user_id = uuid.UUID(str(claims["sub"]))
        self.conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
        self.storage_root = storage_root
        self.signer = signer

    @classmethod
    def from_token(
        cls,
        dsn: str,
        access_token: str,
        *,
        jwt_secret: str | None = None,
        jwks_url: str | None = None,
        audience: str = "authenticated",
        storage_root: Path | None = None,
        signer: LocalSigner | None = None,
    ) -> PostgresTransport:
        claims = verify_token(access_token, jwt_secret=jwt_secret, jwks_url=jwks_url, audience=audience)
        return cls(dsn, claims, storage_root=storage_root, signer=signer)

    @property
    def user_id(self) -> uuid.UUID:
        return self._user_id

    def _as_user(self, query: LiteralString, params: Any) -> list[dict[str, Any]]:
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(SET_CONTEXT, ("authenticated", json.dumps(self.claims)))
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def rpc(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if function not in RPC:
            raise VidanimError(f"unknown function {function}")
        bound = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}
        return self._as_user(RPC[function], bound)

    def jobs(self, job_id: uuid.UUID | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._as_user(JOB, (job_id,)) if job_id else self._as_user(JOBS, (limit,))

    def events(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        return self._as_user(EVENTS, (job_id,))

    def upload(self, bucket: str, path: str, data: bytes, content_type: str) -> None:
        """Like the Storage server: the row is written as the user, so the policies decide."""
        if self.storage_root is None:
            raise StorageError("this client has no local storage configured", status=503)
        try:
            check_object_name(path)
        except StorageError as exc:
            raise InvalidInput(f"{path!r} is not a valid object name") from exc
        target = (self.storage_root / bucket / path).resolve()
        # Users upload into video-inputs only (the policies refuse the rest); its limits
        # are what the Storage server would enforce.
        limits = self._as_user(INPUT_LIMITS, ()) if bucket == "video-inputs" else []
        if limits:
            size_limit, types = limits[0]["file_size_limit"], limits[0]["allowed_mime_types"]
            if types and content_type not in types:
                raise invalid_mime_type(content_type)
            if size_limit is not None and len(data) > size_limit:
                raise entity_too_large(bucket)
        meta = Jsonb({"size": len(data), "mimetype": content_type})
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(SET_CONTEXT, ("authenticated", json.dumps(self.claims)))
                cur.execute(RECORD_UPLOAD, (bucket, path, str(self.user_id), meta))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        except psycopg.errors.UniqueViolation:
            raise StorageError(f"{bucket}/{path} already exists", status=409, code="KeyAlreadyExists") from None
        except psycopg.Error as exc:
            raise _error(exc) from exc

    def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        if self.signer is None:
            raise StorageError("this client cannot sign URLs (no local storage URL configured)", status=503)
        if not self._as_user(CAN_READ, (bucket, path)):
            raise StorageError("Object not found", status=404)
        return self.signer.sign(bucket, path, expires_in)

    def close(self) -> None:
        self.conn.close()
