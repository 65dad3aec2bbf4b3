"""Local filesystem storage, for the embedded default.

Files live under `root/{bucket}/{name}`; every object is also recorded in
`storage.objects`, exactly as Supabase's Storage server records it, so the SQL
API's checks (the input image exists, the output video exists before a job may be
completed) and the storage RLS policies mean the same thing here. Signed URLs are
HS256 tokens served by a small loopback HTTP server with the same URL shape as
Supabase (`/object/sign/{bucket}/{name}?token=...`).

Uploads stream to a temporary file in the same directory and are renamed into
place before the row is inserted: a crash leaves either nothing or a file without
a row, which the next upload replaces. Uploads never overwrite a recorded object.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import tempfile
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, LiteralString
from urllib.parse import quote, unquote, urlsplit

import jwt
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from vidanim.httpserver import QuietThreadingHTTPServer
from vidanim.storage.base import (
    ObjectExists,
    ObjectInfo,
    SignedUrl,
    StorageError,
    check_object_name,
    entity_too_large,
    invalid_mime_type,
)

OBJECT_INFO: LiteralString = "select metadata from storage.objects where bucket_id = %s and name = %s"
BUCKET_LIMITS: LiteralString = "select file_size_limit, allowed_mime_types from storage.buckets where id = %s"
RECORD_OBJECT: LiteralString = """
    insert into storage.objects (bucket_id, name, owner_id, metadata)
    values (%s, %s, %s, %s)
    on conflict (bucket_id, name) do nothing
    returning id
"""
# Supabase's own guard against direct deletes is lifted locally, as its Storage server does.
DELETE_OBJECTS: LiteralString = "delete from storage.objects where bucket_id = %s and name = any(%s) returning name"
ALLOW_DELETE: LiteralString = "select set_config('storage.allow_delete_query', 'true', true)"

CHUNK = 1024 * 1024


class LocalSigner:
    """Signed URLs for local storage: HS256 tokens naming one object, with an expiry.

    Shared by the storage server (which checks them) and by clients that hand URLs out.
    """

    def __init__(self, secret: str | None, base_url: str | None = None):
        # A key of exactly 32 bytes whatever the secret's length (HS256 wants >= 32).
        self._key = hashlib.sha256((secret or secrets.token_urlsafe(32)).encode()).digest()
        self.base_url = base_url

    def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        check_object_name(path)
        if self.base_url is None:
            raise StorageError("local storage is not serving signed URLs (no base URL)", status=503)
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        token = jwt.encode({"url": f"{bucket}/{path}", "exp": expires_at}, self._key, algorithm="HS256")
        return SignedUrl(f"{self.base_url}/object/sign/{quote(bucket)}/{quote(path)}?token={token}", expires_at)

    def verify(self, bucket: str, path: str, token: str) -> str | None:
        """None if the token grants this object now, else the Supabase error code."""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], options={"require": ["exp", "url"]})
        except jwt.PyJWTError:  # expired, tampered, malformed
            return "InvalidJWT"
        return None if claims.get("url") == f"{bucket}/{path}" else "InvalidSignature"


class LocalStorage:
    def __init__(
        self,
        *,
        root: Path,
        pool: AsyncConnectionPool[Any],
        signing_secret: str | None = None,
        public_url: str | None = None,
    ):
        self.root = Path(root)
        self.pool = pool
        self.signer = LocalSigner(signing_secret, public_url)
        self._server: QuietThreadingHTTPServer | None = None

    # signed-URL server ----------------------------------------------------------
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the loopback server for signed URLs; returns its base URL."""
        self._server = QuietThreadingHTTPServer((host, port), _handler(self))
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        bound_host, bound_port = self._server.server_address[:2]
        self.signer.base_url = f"http://{bound_host!s}:{bound_port}"
        return self.signer.base_url

    @property
    def public_url(self) -> str | None:
        return self.signer.base_url

    def file_path(self, bucket: str, path: str) -> Path:
        check_object_name(path)
        full = (self.root / bucket / path).resolve()
        if not full.is_relative_to((self.root / bucket).resolve()):
            raise StorageError(f"invalid object name {path!r}", status=400)
        return full

    # Storage ------------------------------------------------------------------------
    async def info(self, bucket: str, path: str) -> ObjectInfo | None:
        check_object_name(path)
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            row = await (await cur.execute(OBJECT_INFO, (bucket, path))).fetchone()
        if row is None:
            return None
        meta = row[0] or {}
        size = meta.get("size")
        return ObjectInfo(bucket, path, int(size) if size is not None else None, meta.get("mimetype"))

    async def upload(
        self,
        bucket: str,
        path: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        size: int | None = None,
        owner: str | None = None,
    ) -> ObjectInfo:
        announced = size
        target = self.file_path(bucket, path)
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            limits = await (await cur.execute(BUCKET_LIMITS, (bucket,))).fetchone()
            if limits is None:
                raise StorageError(f"bucket {bucket} not found", status=404)
            if (await (await cur.execute(OBJECT_INFO, (bucket, path))).fetchone()) is not None:
                raise ObjectExists(f"{bucket}/{path} already exists", status=409, code="KeyAlreadyExists")
        size_limit, mime_types = limits
        if mime_types and content_type not in mime_types:
            raise invalid_mime_type(content_type)
        if size_limit is not None and announced is not None and announced > size_limit:
            raise entity_too_large(bucket)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size_limit is not None and size > size_limit:
                        raise entity_too_large(bucket)
                    await asyncio.to_thread(out.write, chunk)
            if announced is not None and announced != size:
                raise StorageError(f"upload of {bucket}/{path} sent {size} bytes, not {announced}", status=400)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        meta = {"size": size, "mimetype": content_type, "contentLength": size, "httpStatusCode": 200}
        async with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            row = await (await cur.execute(RECORD_OBJECT, (bucket, path, owner, Jsonb(meta)))).fetchone()
        if row is None:
            raise ObjectExists(f"{bucket}/{path} already exists", status=409, code="KeyAlreadyExists")
        return ObjectInfo(bucket, path, size, content_type)

    async def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        # As Supabase does: no signed URL for an object that is not there.
        if await self.info(bucket, path) is None:
            raise StorageError("Object not found", status=404)
        return self.signer.sign(bucket, path, expires_in)

    async def delete(self, bucket: str, paths: list[str]) -> list[str]:
        files = {p: self.file_path(bucket, p) for p in paths}
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(ALLOW_DELETE)
            await cur.execute(DELETE_OBJECTS, (bucket, paths))
            deleted = [str(r[0]) for r in await cur.fetchall()]
        for name in deleted:
            with contextlib.suppress(FileNotFoundError):
                files[name].unlink()
        return deleted

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def verify(self, bucket: str, path: str, token: str) -> str | None:
        return self.signer.verify(bucket, path, token)


def _handler(storage: LocalStorage) -> type[BaseHTTPRequestHandler]:
    import json

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _error(self, status: str, code: str, message: str) -> None:
            body = json.dumps({"statusCode": status, "error": code, "message": message}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.split("/", 4)
            query = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
            if len(parts) < 5 or parts[1:3] != ["object", "sign"] or "token" not in query:
                return self._error("400", "InvalidRequest", "not a signed URL")
            bucket, path = unquote(parts[3]), unquote(parts[4])
            if problem := storage.verify(bucket, path, query["token"]):
                return self._error("400", problem, "invalid or expired signature")
            try:
                file = storage.file_path(bucket, path)
                size = file.stat().st_size
            except (StorageError, FileNotFoundError):
                return self._error("404", "NoSuchKey", "Object not found")
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4" if path.endswith(".mp4") else _image_type(path))
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with file.open("rb") as f:
                while chunk := f.read(CHUNK):
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        return None
            return None

    return Handler


def _image_type(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
        ext, "application/octet-stream"
    )
