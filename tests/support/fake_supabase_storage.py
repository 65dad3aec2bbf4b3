"""A loopback stand-in for Supabase's Storage server that behaves as the real one does.

The behaviour is that of the open-source server (supabase/storage v1.11), measured
against vidanim's migrations; docs/storage.md lists each fact. In short:

- Requests run as the JWT's role with its claims set locally, on the real database:
  storage.objects and its RLS policies decide, and buckets come from storage.buckets.
- Errors are HTTP 400 (500 stays 500) with the real status in the body:
  `{"statusCode": "409", "code": "KeyAlreadyExists", "error": "Duplicate", "message": ...}`.
  A bad or expired JWT is `statusCode "403"`; no Authorization header is "400".
- An upload it refuses (bad JWT, bad name, no bucket, wrong type, too large by
  Content-Length, duplicate, RLS) is answered *before its body is read*. Up to about
  200 KB of body the connection then carries on; above that the server stops reading
  it: the next request on the connection hangs until the server drops the connection
  (after `stall_seconds`, about 62 s on the real server); from a few MB the refused
  request itself hangs that long and ends in a transport error, its answer lost.
- `file_size_limit` (the bucket's, or the project's global limit when smaller) is
  checked only against a Content-Length: a chunked body of any size is stored.
- Object names must match `[A-Za-z0-9_/!.*'() &$=@;:+,?-]`, else `InvalidKey`.
- `GET /object/info/{bucket}/{name}` accepts a missing or invalid JWT and runs as
  anon: a private bucket's object then reads as "Bucket not found" (404).
  `/object/info/authenticated/...` requires a valid JWT.
- A valid key that may not see an object (the anon key: RLS hides it) hears what a
  missing object gets, from `info` (either route) and `sign` alike: HTTP 400
  `{"statusCode": "404", "error": "not_found", "code": "NoSuchKey"}`.
- `DELETE /object/{bucket}` answers 200 with the objects it deleted: `[]` when RLS
  hides them from the caller.
- The `apikey` header is ignored (Supabase's gateway checks it, not this server).
- A signed URL comes back relative and not percent-encoded.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from vidanim.httpserver import QuietThreadingHTTPServer

DEFAULT_SECRET = "fake-storage-jwt-secret-of-at-least-32-characters"
VALID_KEY = re.compile(r"^[A-Za-z0-9_/!.*'() &$=@;:+,?-]+$")
# Bodies up to this size are drained after an early refusal; the real server's
# connection survives them (measured: clean up to about 200 KB).
CLEAN_REFUSAL_BYTES = 200_000
# Above this, the refused request itself hangs until the connection drops, and its
# answer is lost (measured: "from a few MB", ReadError after about 62 s).
HANGING_REFUSAL_BYTES = 4 * 1024 * 1024
# Bytes of each object kept for downloads through signed URLs; larger objects keep
# their size and first bytes only (a benchmark streams gigabytes through here).
KEEP_BYTES = 16 * 1024 * 1024

INSERT_OBJECT = "insert into storage.objects (bucket_id, name, owner_id, metadata) values (%s, %s, %s, %s) returning id"
SELECT_OBJECT = (
    "select id, name, metadata, created_at, updated_at from storage.objects where bucket_id = %s and name = %s"
)
DELETE_OBJECTS = "delete from storage.objects where bucket_id = %s and name = any(%s) returning id, name, bucket_id"
BUCKET = "select id, public, file_size_limit, allowed_mime_types from storage.buckets where id = %s"


class Refused(Exception):
    """A Storage error, as the server sends it."""

    def __init__(self, status: str, code: str, error: str, message: str):
        super().__init__(message)
        self.status, self.code, self.error, self.message = status, code, error, message

    def body(self) -> dict[str, str]:
        return {"statusCode": self.status, "code": self.code, "error": self.error, "message": self.message}


def no_such_key() -> Refused:
    return Refused("404", "NoSuchKey", "not_found", "Object not found")


def no_such_bucket() -> Refused:
    return Refused("404", "NoSuchBucket", "Bucket not found", "Bucket not found")


@dataclass
class StoredObject:
    size: int
    content_type: str
    head: bytes
    data: bytes | None = None


@dataclass
class FakeSupabaseStorage:
    """The Storage server on loopback, over `database_url`; keys are JWTs signed with `jwt_secret`."""

    database_url: str
    jwt_secret: str = DEFAULT_SECRET
    host: str = "127.0.0.1"
    port: int = 0
    #: how long a connection the server stopped reading stays open (real server: about 62 s)
    stall_seconds: float = 62.0
    #: the path prefix Supabase's gateway adds; "" for the bare server
    prefix: str = "/storage/v1"
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    uploads: int = 0
    chunked_uploads: int = 0
    refusals: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    #: False when another server (a gateway stand-in) serves these routes
    listen: bool = True
    #: the project's global file size limit (Storage's settings; 50 MB on the free plan, none
    #: here): the smaller of it and the bucket's `file_size_limit` applies
    file_size_limit: int | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        if self.listen:
            self._server = QuietThreadingHTTPServer((self.host, self.port), storage_handler(self))

    # keys -----------------------------------------------------------------------------
    def key(self, role: str, **claims: Any) -> str:
        return jwt.encode({"role": role, "iss": "supabase", **claims}, self.jwt_secret, algorithm="HS256")

    @property
    def service_key(self) -> str:
        return self.key("service_role")

    @property
    def anon_key(self) -> str:
        return self.key("anon")

    @property
    def url(self) -> str:
        """What a client calls SUPABASE_URL (the gateway's base, without the prefix)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeSupabaseStorage:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    # database, as the request's role ---------------------------------------------------
    def connect(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)

    @staticmethod
    def act_as(conn: psycopg.Connection[Any], claims: dict[str, Any]) -> None:
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (claims.get("role", "anon"), json.dumps(claims)),
        )

    def bucket(self, bucket_id: str) -> dict[str, Any] | None:
        with self.connect() as conn:
            return conn.execute(BUCKET, (bucket_id,)).fetchone()

    def claims(self, authorization: str | None, *, anon_fallback: bool = False) -> dict[str, Any]:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token:
            if anon_fallback:
                return {"role": "anon"}
            raise Refused("400", "InvalidRequest", "Bad Request", "headers must have required property 'authorization'")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            if anon_fallback:
                return {"role": "anon"}
            raise Refused("403", "AccessDenied", "Unauthorized", "jwt expired") from None
        except jwt.PyJWTError:
            if anon_fallback:
                return {"role": "anon"}
            raise Refused("403", "AccessDenied", "Unauthorized", "invalid signature") from None
        return claims


BUCKET_AS_CALLER = "select 1 from storage.buckets where id = %s"


def _body_pieces(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The request body as it arrives, chunked transfer-encoding included."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return
            yield handler.rfile.read(size)
            handler.rfile.readline()
    remaining = int(handler.headers.get("Content-Length") or 0)
    while remaining:
        piece = handler.rfile.read(min(remaining, 1 << 20))
        if not piece:
            return
        remaining -= len(piece)
        yield piece


class StorageRoutes(BaseHTTPRequestHandler):
    """Storage's routes, for any handler that sets `storage` (this server, or a gateway)."""

    protocol_version = "HTTP/1.1"
    storage: FakeSupabaseStorage

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # answers ---------------------------------------------------------------------------
    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def refuse(self, refused: Refused) -> None:
        self.storage.refusals.append(refused.code)
        self.send_json(500 if refused.status == "500" else 400, refused.body())

    def refuse_early(self, refused: Refused) -> None:
        """Answer before reading the body, then behave as the real server does with the rest."""
        length = self.headers.get("Content-Length")
        size = int(length) if length is not None else None
        if size is not None and size <= CLEAN_REFUSAL_BYTES:
            self.refuse(refused)
            for _ in _body_pieces(self):  # small: read and dropped, the connection carries on
                pass
            return
        if size is None or size <= HANGING_REFUSAL_BYTES:
            # The client reads this answer (a chunked body of unknown size included);
            # the connection is dead after it.
            self.refuse(refused)
        else:
            self.storage.refusals.append(refused.code)  # never seen: the client is stuck sending
        # Larger (or chunked): this connection is not read again. Hold it, then drop it.
        self.close_connection = True
        deadline = time.monotonic() + self.storage.stall_seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
        # Dropped with a reset, as the real server's connection ends: what the client
        # had not read yet (the early answer included) is lost with it.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    # routing ---------------------------------------------------------------------------
    def storage_route(self, method: str) -> bool:
        """Serve a Storage request; False when the path is not Storage's."""
        url = urlsplit(self.path)
        path = unquote(url.path)
        prefix = self.storage.prefix + "/object/"
        if not path.startswith(prefix):
            return False
        rest = path.removeprefix(prefix)
        self.storage.requests.append(f"{method} {rest}")
        try:
            if method == "GET" and rest.startswith("info/authenticated/"):
                self._info(*self._split(rest.removeprefix("info/authenticated/")), anon_fallback=False)
            elif method == "GET" and rest.startswith("info/"):
                self._info(*self._split(rest.removeprefix("info/")), anon_fallback=True)
            elif method == "GET" and rest.startswith("sign/"):
                self._download(*self._split(rest.removeprefix("sign/")), parse_qs(url.query).get("token", [""])[0])
            elif method == "POST" and rest.startswith("sign/"):
                self._sign(*self._split(rest.removeprefix("sign/")))
            elif method == "DELETE" and "/" not in rest:
                self._delete(rest)
            elif method == "POST":
                self._upload(*self._split(rest))
            else:
                self.send_json(404, {"statusCode": "404", "error": "Not Found", "message": "Route not found"})
        except Refused as refused:
            self.refuse(refused)
        return True

    @staticmethod
    def _split(rest: str) -> tuple[str, str]:
        bucket, _, name = rest.partition("/")
        return bucket, name

    def _json(self) -> dict[str, Any]:
        raw = b"".join(_body_pieces(self))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # routes ----------------------------------------------------------------------------
    def _upload(self, bucket_id: str, name: str) -> None:
        storage = self.storage
        try:
            claims = storage.claims(self.headers.get("Authorization"))
            if not VALID_KEY.match(name):
                raise Refused("400", "InvalidKey", "InvalidKey", f"Invalid key: {name}")
            bucket = storage.bucket(bucket_id)
            if bucket is None:
                raise no_such_bucket()
            content_type = self.headers.get("Content-Type", "")
            multipart = content_type.startswith("multipart/form-data")
            types = bucket["allowed_mime_types"]
            if not multipart and types and content_type not in types:
                raise Refused(
                    "415", "InvalidMimeType", "invalid_mime_type", f"mime type {content_type} is not supported"
                )
            length = self.headers.get("Content-Length")
            limit = min(
                (n for n in (bucket["file_size_limit"], storage.file_size_limit) if n is not None), default=None
            )
            if not multipart and limit is not None and length is not None and int(length) > limit:
                raise Refused(
                    "413", "EntityTooLarge", "Payload too large", "The object exceeded the maximum allowed size"
                )
            upsert = self.headers.get("x-upsert") == "true"
            self._check_insert(claims, bucket_id, name, upsert)
        except Refused as refused:
            self.refuse_early(refused)
            return
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            storage.chunked_uploads += 1
        size, head, kept = 0, b"", bytearray()
        for piece in _body_pieces(self):
            size += len(piece)
            if len(head) < 16:
                head = (head + piece)[:16]
            if len(kept) < KEEP_BYTES:
                kept += piece[: KEEP_BYTES - len(kept)]
        data = bytes(kept) if size <= KEEP_BYTES else None
        file_type = content_type
        if multipart and data is not None:
            data, file_type = _multipart_file(content_type, data)
            size, head = len(data), data[:16]
            if types and file_type not in types:
                raise Refused("415", "InvalidMimeType", "invalid_mime_type", f"mime type {file_type} is not supported")
            if limit is not None and size > limit:
                raise Refused(
                    "413", "EntityTooLarge", "Payload too large", "The object exceeded the maximum allowed size"
                )
        with storage.connect() as conn, conn.transaction():
            storage.act_as(conn, claims)
            meta = Jsonb({"size": size, "mimetype": file_type, "contentLength": size, "httpStatusCode": 200})
            if upsert:
                conn.execute("select set_config('storage.allow_delete_query', 'true', true)")
                conn.execute("delete from storage.objects where bucket_id = %s and name = %s", (bucket_id, name))
            row = conn.execute(INSERT_OBJECT, (bucket_id, name, claims.get("sub"), meta)).fetchone()
        with storage._lock:
            storage.objects[(bucket_id, name)] = StoredObject(size, file_type, head, data)
            storage.uploads += 1
        self.send_json(200, {"Key": f"{bucket_id}/{name}", "Id": str(row["id"]) if row else None})

    def _check_insert(self, claims: dict[str, Any], bucket_id: str, name: str, upsert: bool) -> None:
        """What the insert of the object's row would say, before any byte is read."""
        with self.storage.connect() as conn:
            try:
                with conn.transaction(force_rollback=True):
                    self.storage.act_as(conn, claims)
                    if upsert:
                        conn.execute("select set_config('storage.allow_delete_query', 'true', true)")
                        conn.execute(
                            "delete from storage.objects where bucket_id = %s and name = %s", (bucket_id, name)
                        )
                    conn.execute(INSERT_OBJECT, (bucket_id, name, claims.get("sub"), Jsonb({})))
            except psycopg.errors.UniqueViolation:
                raise Refused("409", "KeyAlreadyExists", "Duplicate", "The resource already exists") from None
            except psycopg.Error as exc:
                message = exc.diag.message_primary or "access denied"
                raise Refused("403", "AccessDenied", "Unauthorized", message) from None

    def _info(self, bucket_id: str, name: str, *, anon_fallback: bool) -> None:
        try:
            claims, verified = self.storage.claims(self.headers.get("Authorization")), True
        except Refused:
            if not anon_fallback:
                raise
            claims, verified = {"role": "anon"}, False
        if self.storage.bucket(bucket_id) is None:
            raise no_such_bucket()
        with self.storage.connect() as conn, conn.transaction():
            self.storage.act_as(conn, claims)
            # With a valid token the bucket is found whoever asks, and RLS then hides the
            # object: a key that may not see it hears NoSuchKey, as for a missing object.
            # Without one (the plain route's anon fallback), RLS hides a private bucket.
            if not verified and conn.execute(BUCKET_AS_CALLER, (bucket_id,)).fetchone() is None:
                raise no_such_bucket()
            row = conn.execute(SELECT_OBJECT, (bucket_id, name)).fetchone()
        if row is None:
            raise no_such_key()
        meta = row["metadata"] or {}
        self.send_json(
            200,
            {
                "id": str(row["id"]),
                "name": name,
                "bucket_id": bucket_id,
                "size": meta.get("size"),
                "content_type": meta.get("mimetype"),
                "metadata": meta,
                "created_at": row["created_at"],
                "last_modified": row["updated_at"],
            },
        )

    def _sign(self, bucket_id: str, name: str) -> None:
        claims = self.storage.claims(self.headers.get("Authorization"))
        body = self._json()
        if "expiresIn" not in body:
            raise Refused("400", "InvalidRequest", "Bad Request", "body must have required property 'expiresIn'")
        with self.storage.connect() as conn, conn.transaction():
            self.storage.act_as(conn, claims)
            if conn.execute(SELECT_OBJECT, (bucket_id, name)).fetchone() is None:
                raise no_such_key()
        expires = int(time.time()) + int(body["expiresIn"])
        token = jwt.encode({"url": f"{bucket_id}/{name}", "exp": expires}, self.storage.jwt_secret, algorithm="HS256")
        # Relative, and the name as stored: not percent-encoded.
        self.send_json(200, {"signedURL": f"/object/sign/{bucket_id}/{name}?token={token}"})

    def _download(self, bucket_id: str, name: str, token: str) -> None:
        try:
            claims = jwt.decode(token, self.storage.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise Refused("400", "InvalidJWT", "invalid_jwt", "jwt expired or invalid") from None
        if claims.get("url") != f"{bucket_id}/{name}":
            raise Refused("400", "InvalidSignature", "invalid_signature", "The signature is invalid")
        stored = self.storage.objects.get((bucket_id, name))
        if stored is None or stored.data is None:
            raise no_such_key()
        self.send_response(200)
        self.send_header("Content-Type", stored.content_type)
        self.send_header("Content-Length", str(len(stored.data)))
        self.end_headers()
        self.wfile.write(stored.data)

    def _delete(self, bucket_id: str) -> None:
        claims = self.storage.claims(self.headers.get("Authorization"))
        prefixes = [str(p) for p in self._json().get("prefixes", [])]
        with self.storage.connect() as conn, conn.transaction():
            self.storage.act_as(conn, claims)
            conn.execute("select set_config('storage.allow_delete_query', 'true', true)")
            rows = conn.execute(DELETE_OBJECTS, (bucket_id, prefixes)).fetchall()
        with self.storage._lock:
            for row in rows:
                self.storage.objects.pop((bucket_id, row["name"]), None)
        self.send_json(200, [{"id": str(r["id"]), "name": r["name"], "bucket_id": r["bucket_id"]} for r in rows])


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    """The `file` part of a multipart/form-data body (what storage3 sends) and its type."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b"", part.get_content_type()
    return body, content_type


def storage_handler(storage: FakeSupabaseStorage) -> type[StorageRoutes]:
    class Handler(StorageRoutes):
        def _serve(self, method: str) -> None:
            if not self.storage_route(method):
                self.send_json(404, {"statusCode": "404", "error": "Not Found", "message": "Route not found"})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

    Handler.storage = storage
    return Handler
