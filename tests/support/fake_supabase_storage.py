"""A loopback stand-in for Supabase's Storage server, speaking its documented HTTP API.

Shapes as observed on a real Storage server (the open-source supabase/storage):
most errors are HTTP 400 with the real code in the body's `statusCode`; uploads to
an existing path are `409 Duplicate` unless `x-upsert: true`; signed URLs are
relative; requests without `Authorization` are `InvalidRequest`. Bodies are read
as they arrive (chunked or not) and only their size and first bytes are kept.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from vidanim.simulator.http import QuietThreadingHTTPServer


@dataclass
class StoredObject:
    size: int
    content_type: str
    head: bytes


@dataclass
class FakeSupabaseStorage:
    service_key: str = "fake-service-role-key"
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    uploads: int = 0
    chunked_uploads: int = 0
    #: like the real Storage server, record uploads in this database's storage.objects
    database_url: str | None = None

    def __post_init__(self) -> None:
        self._server = QuietThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeSupabaseStorage:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(fake: FakeSupabaseStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: str, error: str, message: str) -> None:
            self._send(400, {"statusCode": code, "error": error, "message": message})

        def _read_body(self):
            """Yield the request body in pieces, chunked transfer-encoding included."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                fake.chunked_uploads += 1
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                piece = self.rfile.read(min(remaining, 1 << 20))
                remaining -= len(piece)
                yield piece

        def _json_body(self) -> dict[str, Any]:
            raw = b"".join(self._read_body())
            try:
                return json.loads(raw or b"{}")
            except ValueError:
                return {}

        def _authorized(self) -> bool:
            auth = self.headers.get("Authorization")
            if not auth:
                self._error("400", "InvalidRequest", "headers must have required property 'authorization'")
                return False
            if auth != f"Bearer {fake.service_key}" or self.headers.get("apikey") != fake.service_key:
                self._error("403", "AccessDenied", "invalid signature")
                return False
            return True

        def _route(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            if not path.startswith("/storage/v1/object/"):
                return self._send(404, {"statusCode": "404", "error": "not_found", "message": "route not found"})
            rest = path.removeprefix("/storage/v1/object/")
            if not self._authorized():
                list(self._read_body())
                return None
            if method == "POST" and rest.startswith("sign/"):
                bucket, _, name = rest.removeprefix("sign/").partition("/")
                body = self._json_body()
                if "expiresIn" not in body:
                    return self._error("400", "InvalidRequest", "body must have required property 'expiresIn'")
                if (bucket, name) not in fake.objects:
                    return self._error("404", "not_found", "Object not found")
                return self._send(200, {"signedURL": f"/object/sign/{bucket}/{name}?token=signed.{body['expiresIn']}"})
            if method == "GET" and rest.startswith("info/"):
                bucket, _, name = rest.removeprefix("info/").partition("/")
                obj = fake.objects.get((bucket, name))
                if obj is None:
                    return self._error("404", "not_found", "Object not found")
                return self._send(200, {"name": name, "size": obj.size, "content_type": obj.content_type})
            if method == "DELETE" and "/" not in rest:
                prefixes = self._json_body().get("prefixes", [])
                gone = [p for p in prefixes if fake.objects.pop((rest, p), None) is not None]
                return self._send(200, [{"name": p} for p in gone])
            if method == "POST":
                bucket, _, name = rest.partition("/")
                exists = (bucket, name) in fake.objects
                upsert = self.headers.get("x-upsert") == "true"
                size, head = 0, b""
                for piece in self._read_body():
                    size += len(piece)
                    head = (head + piece)[:16] if len(head) < 16 else head
                if exists and not upsert:
                    return self._error("409", "Duplicate", "The resource already exists")
                content_type = self.headers.get("Content-Type", "")
                if bucket == "video-outputs" and content_type != "video/mp4":
                    return self._error("415", "InvalidMimeType", f"mime type {content_type} is not supported")
                fake.objects[(bucket, name)] = StoredObject(size, content_type, head)
                fake.uploads += 1
                if fake.database_url:
                    import psycopg
                    from psycopg.types.json import Jsonb

                    with psycopg.connect(fake.database_url, autocommit=True) as conn:
                        conn.execute(
                            "insert into storage.objects (bucket_id, name, metadata) values (%s, %s, %s)"
                            " on conflict (bucket_id, name) do update set metadata = excluded.metadata",
                            (bucket, name, Jsonb({"size": size, "mimetype": content_type})),
                        )
                return self._send(200, {"Key": f"{bucket}/{name}", "Id": "00000000-0000-0000-0000-000000000000"})
            return self._send(404, {"statusCode": "404", "error": "not_found", "message": "route not found"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler
