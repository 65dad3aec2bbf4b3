"""A loopback stand-in for Supabase's API gateway as it takes the new API keys.

In front of an upstream (FakeSupabaseApi: PostgREST and Storage over the real database)
it does what Supabase's gateway does with a request's keys:

- no `apikey` header: 401 `No API key found in request`;
- `apikey: sb_publishable_…`: the request goes on as `anon`, or as the user whose token is
  the bearer token;
- `apikey: sb_secret_…`: refused (401) from a browser's user agent and when a secret key
  is the bearer token; otherwise it goes on as `service_role` (the gateway signs the
  upstream token itself), or as the user whose token is the bearer token;
- an unknown `sb_` key: 401 `Invalid API key`;
- a legacy JWT key goes on unchanged (the services verify it);
- a signed URL's download (`GET /storage/v1/object/sign/…?token=`) needs no key: the
  token in the URL is the authority, so a provider can fetch an input with it.

Bodies are buffered before they go upstream, as Kong does. `requests` records each
request's (method, path, apikey kind, bearer kind) for tests to read.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import jwt

from tests.support.fake_supabase_storage import _body_pieces
from vidanim.httpserver import QuietThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}
BROWSER_AGENTS = ("Mozilla/",)
SIGNED_DOWNLOADS = "/storage/v1/object/sign/"


class FakeSupabaseGateway:
    def __init__(self, upstream: str, jwt_secret: str):
        self.upstream = upstream.rstrip("/")
        self.jwt_secret = jwt_secret
        self.publishable_key = f"sb_publishable_{secrets.token_urlsafe(16)}"
        self.secret_key = f"sb_secret_{secrets.token_urlsafe(24)}"
        self.requests: list[tuple[str, str, str, str]] = []
        self._http = httpx.Client(timeout=60)
        self._server = QuietThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def role_token(self, role: str) -> str:
        return jwt.encode({"role": role, "iss": "supabase"}, self.jwt_secret, algorithm="HS256")

    def __enter__(self) -> FakeSupabaseGateway:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def admit(self, headers: Any) -> tuple[int, dict[str, str]] | str:
        """The upstream Authorization for a request, or (status, body) refusing it."""
        apikey = headers.get("apikey") or ""
        bearer = (headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if not apikey:
            return 401, {"message": "No API key found in request", "hint": "No `apikey` request header was found."}
        if bearer.startswith("sb_"):
            return 401, {"message": "Invalid authorization: an API key is not a JWT; send it in the apikey header"}
        if apikey == self.secret_key:
            if (headers.get("User-Agent") or "").startswith(BROWSER_AGENTS):
                return 401, {"message": "Forbidden use of secret API key in browser"}
            return bearer or self.role_token("service_role")
        if apikey == self.publishable_key:
            return bearer or self.role_token("anon")
        if apikey.startswith("sb_"):
            return 401, {"message": "Invalid API key"}
        return bearer or apikey


def _kind(value: str) -> str:
    if value.startswith("sb_"):
        return value.split("_")[1]
    return "jwt" if value.count(".") == 2 else ("none" if not value else "other")


def _handler(gateway: FakeSupabaseGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None

        def _proxy(self) -> None:
            bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            gateway.requests.append(
                (self.command, self.path.split("?")[0], _kind(self.headers.get("apikey") or ""), _kind(bearer))
            )
            body = b"".join(_body_pieces(self))
            if self.command == "GET" and self.path.startswith(SIGNED_DOWNLOADS):
                admitted: tuple[int, dict[str, str]] | str = ""
            else:
                admitted = gateway.admit(self.headers)
            if not isinstance(admitted, str):
                status, message = admitted
                payload = json.dumps(message).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}
            if admitted:
                headers["Authorization"] = f"Bearer {admitted}"
                headers["apikey"] = admitted
            answer = gateway._http.request(self.command, gateway.upstream + self.path, content=body, headers=headers)
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _proxy

    return Handler
