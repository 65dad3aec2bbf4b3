"""Who may look and who may act: roles, sign-in, signed session cookies and CSRF tokens.

Two roles: `viewer` reads every page, `operator` may also act. A session is a signed
cookie (HMAC-SHA256 over its JSON; no server state) carrying the role, who signed in,
an expiry and the session's CSRF token, which every form posts back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from vidanim.client.postgres import verify_token
from vidanim.errors import NotSignedIn

ROLES = ("viewer", "operator")
COOKIE = "vidanim_dashboard"
ROLE_CLAIM = "vidanim_role"  # in a Supabase Auth user's app_metadata (only the service role can set it)


class SignInRefused(Exception):
    """Wrong credentials, or an account without a dashboard role."""


@dataclass(frozen=True)
class Session:
    who: str
    role: str
    csrf: str
    expires_at: float

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


class SessionSigner:
    def __init__(self, secret: str | None, hours: float):
        self._key = hashlib.sha256((secret or secrets.token_urlsafe(32)).encode()).digest()
        self.seconds = hours * 3600

    def new(self, who: str, role: str) -> Session:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return Session(who, role, secrets.token_urlsafe(24), time.time() + self.seconds)

    def dump(self, session: Session) -> str:
        body = json.dumps({"who": session.who, "role": session.role, "csrf": session.csrf, "exp": session.expires_at})
        payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{payload}.{self._mac(payload)}"

    def load(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, if its signature holds and it has not expired."""
        if not cookie or "." not in cookie:
            return None
        payload, mac = cookie.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["who"]), str(data["role"]), str(data["csrf"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.role not in ROLES or session.expires_at < time.time():
            return None
        return session

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf, str(token))


def password_role(password: str, viewer: str | None, operator: str | None) -> str:
    """The role a dashboard password names (operator first); SignInRefused when none."""
    given = password.encode()
    if operator and hmac.compare_digest(given, operator.encode()):
        return "operator"
    if viewer and hmac.compare_digest(given, viewer.encode()):
        return "viewer"
    raise SignInRefused("wrong password")


def role_of_claims(claims: dict[str, Any]) -> str:
    """The dashboard role in a verified Supabase Auth token (app_metadata only: users cannot set it)."""
    app_metadata = claims.get("app_metadata")
    role = app_metadata.get(ROLE_CLAIM) if isinstance(app_metadata, dict) else None
    if role not in ROLES:
        raise SignInRefused("this account has no dashboard role")
    return str(role)


async def supabase_sign_in(
    client: httpx.AsyncClient,
    supabase_url: str,
    anon_key: str,
    email: str,
    password: str,
    *,
    jwt_secret: str | None,
    jwks_url: str | None,
) -> tuple[str, str]:
    """Sign in at Supabase Auth; (email, role) once the token is verified as the client verifies tokens."""
    response = await client.post(
        f"{supabase_url.rstrip('/')}/auth/v1/token",
        params={"grant_type": "password"},
        json={"email": email, "password": password},
        headers={"apikey": anon_key},
    )
    if response.status_code != 200:
        raise SignInRefused("wrong email or password")
    token = response.json().get("access_token")
    if not isinstance(token, str):
        raise SignInRefused("Supabase Auth gave no access token")
    try:
        claims = verify_token(token, jwt_secret=jwt_secret, jwks_url=jwks_url)
    except NotSignedIn as exc:
        raise SignInRefused(exc.message) from None
    return str(claims.get("email") or claims["sub"]), role_of_claims(claims)
