"""A loopback stand-in for Supabase's API gateway (PostgREST + Storage), over the real database.

It does what PostgREST and the Storage server do for a request, on a real PostgreSQL:
verify the JWT (HS256, the project's secret), open a transaction, set `role` and
`request.jwt.claims` locally, run the call, and answer with their documented shapes:
PostgREST errors `{code, message, details, hint}` with the status from its SQLSTATE
table; Storage errors as HTTP 400 with the real code in `statusCode`. RLS and
grants decide everything, as on Supabase. Only what vidanim's client uses is served.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support.fake_supabase_storage import FakeSupabaseStorage, StorageRoutes
from vidanim.httpserver import QuietThreadingHTTPServer

TABLES = {"video_jobs", "video_job_events"}


def http_status(sqlstate: str | None, role: str) -> int:
    """PostgREST's mapSQLtoHTTP for the codes vidanim raises."""
    if not sqlstate:
        return 500
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    if sqlstate in ("23503", "23505"):
        return 409
    if sqlstate.startswith("08"):
        return 503
    return 400


class FakeSupabaseApi:
    def __init__(self, dsn: str, jwt_secret: str, *, stall_seconds: float = 62.0):
        self.dsn = dsn
        self.secret = jwt_secret
        # Storage behind the gateway: the same stand-in as the worker's, sharing the database.
        self.storage = FakeSupabaseStorage(dsn, jwt_secret, listen=False, stall_seconds=stall_seconds)
        self._server = QuietThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def anon_key(self) -> str:
        return jwt.encode({"role": "anon", "iss": "supabase"}, self.secret, algorithm="HS256")

    def __enter__(self) -> FakeSupabaseApi:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def run_as(self, claims: dict[str, Any], query: sql.Composable, params: Any) -> list[dict[str, Any]]:
        role = claims.get("role", "anon")
        with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as conn, conn.transaction():
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps(claims)),
            )
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def _handler(api: FakeSupabaseApi) -> type[BaseHTTPRequestHandler]:
    class Handler(StorageRoutes):
        storage = api.storage

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _claims(self) -> dict[str, Any] | None:
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ").strip() or self.headers.get("apikey", "")
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, api.secret, algorithms=["HS256"], options={"verify_aud": False}
                )
            except jwt.ExpiredSignatureError:
                self.send_json(401, {"code": "PGRST303", "message": "JWT expired", "details": None, "hint": None})
                return None
            except jwt.PyJWTError:
                self.send_json(
                    401,
                    {"code": "PGRST301", "message": "No suitable key or wrong key type", "details": None, "hint": None},
                )
                return None
            return claims

        def _pg_error(self, exc: psycopg.Error, role: str) -> None:
            self.send_json(
                http_status(exc.sqlstate, role),
                {
                    "code": exc.sqlstate,
                    "message": exc.diag.message_primary,
                    "details": exc.diag.message_detail,
                    "hint": exc.diag.message_hint,
                },
            )

        def do_POST(self) -> None:
            if self.storage_route("POST"):
                return None
            path = unquote(urlsplit(self.path).path)
            body = self._body()
            claims = self._claims()
            if claims is None:
                return None
            if path.startswith("/rest/v1/rpc/"):
                return self._rpc(path.removeprefix("/rest/v1/rpc/"), json.loads(body or b"{}"), claims)
            return self.send_json(404, {"message": "not found"})

        def do_DELETE(self) -> None:
            if not self.storage_route("DELETE"):
                self.send_json(404, {"message": "not found"})

        def do_GET(self) -> None:
            if self.storage_route("GET"):
                return None
            url = urlsplit(self.path)
            claims = self._claims()
            if claims is None:
                return None
            table = url.path.removeprefix("/rest/v1/")
            if table not in TABLES:
                return self.send_json(404, {"code": "42P01", "message": f"relation {table} does not exist"})
            where, order, limit = [], sql.SQL(""), sql.SQL("")
            params: list[Any] = []
            for key, value in parse_qsl(url.query):
                if key == "select":
                    continue
                if key == "order":
                    column, _, direction = value.partition(".")
                    order = sql.SQL(" order by {} {}").format(
                        sql.Identifier(column), sql.SQL("desc" if direction.startswith("desc") else "asc")
                    )
                elif key == "limit":
                    limit = sql.SQL(" limit {}").format(sql.Literal(int(value)))
                elif value.startswith("eq."):
                    where.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                    params.append(value[3:])
            query = sql.SQL("select * from public.{}").format(sql.Identifier(table))
            if where:
                query += sql.SQL(" where ") + sql.SQL(" and ").join(where)
            try:
                rows = api.run_as(claims, query + order + limit, params)
            except psycopg.Error as exc:
                return self._pg_error(exc, claims.get("role", "anon"))
            return self.send_json(200, rows)

        def _rpc(self, function: str, args: dict[str, Any], claims: dict[str, Any]) -> None:
            with psycopg.connect(api.dsn) as conn:
                found = conn.execute(
                    "select proretset from pg_proc where proname = %s and pronamespace = 'public'::regnamespace",
                    (function,),
                ).fetchone()
            if found is None:
                return self.send_json(404, {"code": "PGRST202", "message": f"Could not find the function {function}"})
            named = [sql.SQL("{} => %s").format(sql.Identifier(k)) for k in args]
            values = [Jsonb(v) if isinstance(v, dict | list) else v for v in args.values()]
            query = sql.SQL("select * from public.{}({})").format(sql.Identifier(function), sql.SQL(", ").join(named))
            try:
                rows = api.run_as(claims, query, values)
            except psycopg.Error as exc:
                return self._pg_error(exc, claims.get("role", "anon"))
            return self.send_json(200, rows if found[0] else (rows[0] if rows else None))

    return Handler
