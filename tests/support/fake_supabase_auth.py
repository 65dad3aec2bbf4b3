"""A loopback stand-in for Supabase Auth's password sign-in (POST /auth/v1/token?grant_type=password).

It answers as GoTrue does: 200 with an HS256 access token signed with the project's JWT
secret (sub, aud, role, email, exp, app_metadata), or 400 invalid_grant.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt

from vidanim.httpserver import QuietThreadingHTTPServer


class FakeSupabaseAuth:
    def __init__(self, jwt_secret: str):
        self.jwt_secret = jwt_secret
        self.users: dict[str, tuple[str, dict[str, Any]]] = {}
        self._server = QuietThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    def add_user(self, email: str, password: str, app_metadata: dict[str, Any] | None = None) -> None:
        self.users[email] = (password, app_metadata or {})

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeSupabaseAuth:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, email: str, app_metadata: dict[str, Any]) -> str:
        claims = {
            "sub": str(uuid.uuid5(uuid.NAMESPACE_DNS, email)),
            "aud": "authenticated",
            "role": "authenticated",
            "email": email,
            "exp": int(time.time()) + 3600,
            "app_metadata": app_metadata,
            "user_metadata": {},
        }
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")


def _handler(auth: FakeSupabaseAuth) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if not self.path.startswith("/auth/v1/token?grant_type=password") or not self.headers.get("apikey"):
                self._send(404, {"error": "not_found"})
                return
            user = auth.users.get(body.get("email", ""))
            if user is None or user[0] != body.get("password"):
                self._send(400, {"error": "invalid_grant", "error_description": "Invalid login credentials"})
                return
            self._send(200, {"access_token": auth.token(body["email"], user[1]), "token_type": "bearer"})

    return Handler
