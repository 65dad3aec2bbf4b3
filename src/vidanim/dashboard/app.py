"""The dashboard's web application: Starlette routes over queries.py and actions.py, Jinja2 pages.

Every page needs a session; every POST needs the session's CSRF token; every action
needs the operator role. The process is `vidanim dashboard`, never the worker's
webhook listener (docs/dashboard.md says why).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vidanim.dashboard import actions, queries
from vidanim.dashboard.auth import (
    COOKIE,
    Session,
    SessionSigner,
    SignInRefused,
    csrf_ok,
    password_role,
    supabase_sign_in,
)
from vidanim.dashboard.chart import day_chart
from vidanim.errors import VidanimError
from vidanim.logs import log_event
from vidanim.settings import Settings
from vidanim.storage.base import Storage, StorageError
from vidanim.worker.db import ServiceDatabase

log = logging.getLogger("vidanim.dashboard")
OUTPUT_BUCKET = "video-outputs"
VIDEO_URL_SECONDS = 600
NOTICES = {
    "canceled": "Job canceled.",
    "retried": "Retry requested: a new job was made.",
    "bulk": "Done: {n} jobs.",
    "paused": "Submissions paused.",
    "resumed": "Submissions resumed; {n} waiting jobs woken.",
    "breaker": "Breaker changed.",
    "cap": "Daily cap set.",
}
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' http: https:; style-src 'self'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass
class Dashboard:
    settings: Settings
    db: ServiceDatabase
    storage: Storage | None
    signer: SessionSigner
    templates: Environment
    http: httpx.AsyncClient

    @property
    def supabase_auth(self) -> bool:
        s = self.settings
        return bool(s.supabase_url and s.supabase_anon_key and (s.jwt_secret or s.jwks_url))

    @property
    def passwords(self) -> bool:
        return bool(self.settings.dashboard_viewer_password or self.settings.dashboard_operator_password)


def _templates() -> Environment:
    folder = resources.files("vidanim.dashboard") / "templates"
    env = Environment(
        loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(default=True), trim_blocks=True
    )
    env.filters["usd"] = lambda v: "none" if v is None else f"${Decimal(v):,.2f}"
    env.filters["when"] = lambda v: "" if v is None else v.strftime("%Y-%m-%d %H:%M:%S")
    env.filters["seconds"] = _duration
    env.globals["urlencode"] = urlencode
    return env


def _duration(value: float | None) -> str:
    if value is None:
        return ""
    seconds = int(value)
    if seconds < 60:
        return f"{value:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


Handler = Callable[[Request, Dashboard, Session], Awaitable[Response]]


def _page(
    dash: Dashboard, request: Request, name: str, session: Session | None, status: int = 200, **ctx: Any
) -> Response:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    if notice:
        n = request.query_params.get("n", "")
        notice = notice.format(n=int(n) if n.isdigit() else "some")
    html = dash.templates.get_template(name).render(session=session, notice=notice, request=request, **ctx)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _dash(request: Request) -> Dashboard:
    dash: Dashboard = request.app.state.dashboard
    return dash


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page any signed-in role may see; without a session, the sign-in page."""

    async def endpoint(request: Request) -> Response:
        dash = _dash(request)
        session = dash.signer.load(request.cookies.get(COOKIE))
        if session is None:
            return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
        try:
            return await handler(request, dash, session)
        except (VidanimError, queries.BadFilter) as exc:
            message = exc.message if isinstance(exc, VidanimError) else str(exc)
            return _page(dash, request, "error.html", session, status=400, message=message)

    return endpoint


def action(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A POST that changes something: a session, its CSRF token, and the operator role."""

    async def endpoint(request: Request) -> Response:
        dash = _dash(request)
        session = dash.signer.load(request.cookies.get(COOKIE))
        if session is None:
            return HTMLResponse("sign in first", status_code=401, headers=SECURITY_HEADERS)
        form = await request.form()
        if not csrf_ok(session, str(form.get("csrf") or "")):
            return _page(dash, request, "error.html", session, status=403, message="This form has expired; reload it.")
        if not session.may_act:
            return _page(
                dash,
                request,
                "error.html",
                session,
                status=403,
                message="Viewers can look, not act: sign in as an operator.",
            )
        try:
            return await handler(request, dash, session)
        except (VidanimError, queries.BadFilter) as exc:
            message = exc.message if isinstance(exc, VidanimError) else str(exc)
            return _page(dash, request, "error.html", session, status=400, message=message)

    return endpoint


def _actor(session: Session) -> str:
    return f"dashboard:{session.who}"


def _back(path: str, notice: str, n: int | None = None, **query: str) -> RedirectResponse:
    params = {**query, "notice": notice, **({"n": str(n)} if n is not None else {})}
    return RedirectResponse(f"{path}?{urlencode(params)}", status_code=303, headers=SECURITY_HEADERS)


# sign-in ----------------------------------------------------------------------------
async def login(request: Request) -> Response:
    dash = _dash(request)
    if request.method == "GET":
        return _page(dash, request, "login.html", None, dash_auth=dash.supabase_auth, passwords=dash.passwords)
    form = await request.form()
    email, password = str(form.get("email") or "").strip(), str(form.get("password") or "")
    s = dash.settings
    try:
        if email:
            if not dash.supabase_auth:
                raise SignInRefused("Supabase Auth is not configured here; use the dashboard password")
            who, role = await supabase_sign_in(
                dash.http,
                s.supabase_url or "",
                s.supabase_anon_key.get_secret_value() if s.supabase_anon_key else "",
                email,
                password,
                jwt_secret=s.jwt_secret.get_secret_value() if s.jwt_secret else None,
                jwks_url=s.jwks_url,
            )
        else:
            role = password_role(
                password,
                s.dashboard_viewer_password.get_secret_value() if s.dashboard_viewer_password else None,
                s.dashboard_operator_password.get_secret_value() if s.dashboard_operator_password else None,
            )
            who = f"{role} (password)"
    except SignInRefused as exc:
        log_event(log, "dashboard.sign_in_refused", logging.WARNING, email=email or None, reason=str(exc))
        return _page(
            dash,
            request,
            "login.html",
            None,
            status=401,
            error=str(exc),
            dash_auth=dash.supabase_auth,
            passwords=dash.passwords,
        )
    session = dash.signer.new(who, role)
    log_event(log, "dashboard.signed_in", who=who, role=role)
    response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE, dash.signer.dump(session), max_age=int(dash.signer.seconds), httponly=True, samesite="strict", path="/"
    )
    return response


async def _logout(request: Request, dash: Dashboard, session: Session) -> Response:
    response = RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    dash = _dash(request)
    session = dash.signer.load(request.cookies.get(COOKIE))
    form = await request.form()
    if session is None or not csrf_ok(session, str(form.get("csrf") or "")):
        return HTMLResponse("refused", status_code=403, headers=SECURITY_HEADERS)
    return await _logout(request, dash, session)


# pages ------------------------------------------------------------------------------
async def _overview(request: Request, dash: Dashboard, session: Session) -> Response:
    data = await queries.overview(dash.db)
    oldest = (data.now - data.oldest_queued).total_seconds() if data.oldest_queued else None
    return _page(
        dash,
        request,
        "overview.html",
        session,
        o=data,
        oldest_seconds=oldest,
        chart=day_chart(data.depth, data.completions),
        statuses=queries.STATUSES,
        providers=queries.PROVIDERS,
        spent=sum((Decimal(r["committed_usd"]) for r in data.spend), Decimal(0)),
    )


async def _jobs(request: Request, dash: Dashboard, session: Session) -> Response:
    values = dict(request.query_params)
    filt = queries.JobFilter.parse(values)
    cursor = queries.Cursor.parse(values.get("before"))
    result = await queries.job_page(dash.db, filt, cursor)
    return _page(
        dash,
        request,
        "jobs.html",
        session,
        page=result,
        filt=filt,
        query=filt.query(),
        statuses=queries.STATUSES,
        providers=queries.PROVIDERS,
        first_page=cursor is None,
    )


async def _job(request: Request, dash: Dashboard, session: Session) -> Response:
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError:
        return _page(dash, request, "error.html", session, status=404, message="No such job: a job id is a UUID.")
    detail = await queries.job_detail(dash.db, job_id)
    if detail is None:
        return _page(dash, request, "error.html", session, status=404, message=f"No job {job_id}.")
    video_url, video_error = None, None
    path = detail.job.get("output_video_path")
    if path and dash.storage is not None:
        try:
            video_url = (await dash.storage.sign(OUTPUT_BUCKET, path, VIDEO_URL_SECONDS)).url
        except StorageError as exc:
            video_error = f"no signed URL: {exc}"
    return _page(
        dash, request, "job.html", session, d=detail, j=detail.job, video_url=video_url, video_error=video_error
    )


# actions ----------------------------------------------------------------------------
def _job_id(request: Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.path_params["job_id"])
    except ValueError:
        raise queries.BadFilter("a job id is a UUID") from None


async def _cancel(request: Request, dash: Dashboard, session: Session) -> Response:
    job_id = _job_id(request)
    await actions.cancel_job(dash.db, job_id, _actor(session))
    return _back(f"/jobs/{job_id}", "canceled")


async def _retry(request: Request, dash: Dashboard, session: Session) -> Response:
    new = await actions.retry_job(dash.db, _job_id(request), _actor(session))
    return _back(f"/jobs/{new}", "retried")


async def _bulk(request: Request, dash: Dashboard, session: Session) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    kind = form.get("action", "")
    if kind not in actions.BULK:
        raise queries.BadFilter("the bulk action is cancel or retry")
    filt = queries.JobFilter.parse(form)
    if form.get("confirm") != "yes":
        counted = await actions.bulk(dash.db, kind, filt, _actor(session), dry_run=True)
        return _page(
            dash, request, "confirm.html", session, kind=kind, filt=filt, query=filt.query(), matched=counted["matched"]
        )
    expected = form.get("expected", "")
    if not expected.isdigit():
        raise queries.BadFilter("confirm the count from the dry run")
    done = await actions.bulk(dash.db, kind, filt, _actor(session), dry_run=False, expected=int(expected))
    return _back("/jobs", "bulk", int(done["acted"]), **filt.query())


def _provider(form: dict[str, str]) -> str | None:
    provider = form.get("provider") or None
    if provider is not None and provider not in queries.PROVIDERS:
        raise queries.BadFilter(f"unknown provider {provider!r}")
    return provider


async def _pause(request: Request, dash: Dashboard, session: Session) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    await actions.pause(dash.db, _provider(form), _actor(session), form.get("reason") or None)
    return _back("/", "paused")


async def _resume(request: Request, dash: Dashboard, session: Session) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    woken = await actions.resume(dash.db, _provider(form), _actor(session))
    return _back("/", "resumed", woken)


async def _breaker(request: Request, dash: Dashboard, session: Session) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    provider = _provider(form)
    state = form.get("state", "")
    if provider is None or state not in ("open", "closed"):
        raise queries.BadFilter("a breaker change names a provider and open or closed")
    await actions.set_breaker(dash.db, provider, state, _actor(session), form.get("reason") or None)
    return _back("/", "breaker")


async def _cap(request: Request, dash: Dashboard, session: Session) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    text = form.get("daily_usd", "").strip()
    try:
        cap = None if text in ("", "none") else Decimal(text)
    except InvalidOperation:
        raise queries.BadFilter(f"the daily cap is an amount in USD, not {text!r}") from None
    await actions.set_cap(dash.db, cap, _actor(session))
    return _back("/", "cap")


def create_app(
    settings: Settings,
    pool: AsyncConnectionPool[Any],
    storage: Storage | None,
    *,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """The dashboard over an open service-role pool (worker.db.open_pool) and a Storage for signed URLs."""
    secret = settings.dashboard_session_secret.get_secret_value() if settings.dashboard_session_secret else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await dash.http.aclose()

    dash = Dashboard(
        settings=settings,
        db=ServiceDatabase(pool),
        storage=storage,
        signer=SessionSigner(secret, settings.dashboard_session_hours),
        templates=_templates(),
        http=http or httpx.AsyncClient(timeout=10.0),
    )
    static = str(resources.files("vidanim.dashboard") / "static")
    app = Starlette(
        routes=[
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", page(_overview)),
            Route("/jobs", page(_jobs)),
            Route("/jobs/bulk", action(_bulk), methods=["POST"]),
            Route("/jobs/{job_id}", page(_job)),
            Route("/jobs/{job_id}/cancel", action(_cancel), methods=["POST"]),
            Route("/jobs/{job_id}/retry", action(_retry), methods=["POST"]),
            Route("/submissions/pause", action(_pause), methods=["POST"]),
            Route("/submissions/resume", action(_resume), methods=["POST"]),
            Route("/breakers", action(_breaker), methods=["POST"]),
            Route("/budget", action(_cap), methods=["POST"]),
            Mount("/static", StaticFiles(directory=static), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.dashboard = dash
    return app
