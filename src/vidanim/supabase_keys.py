"""Supabase's API keys, both generations, and the headers each is sent in.

Legacy keys are HS256 JWTs whose `role` claim says what they are (`anon`,
`service_role`); Supabase retires them by the end of 2026. New projects have
`sb_publishable_…` keys (what `anon` was: safe in an app, RLS applies) and
`sb_secret_…` keys (what `service_role` was: servers only, RLS bypassed).

How Supabase's gateway takes them:

- a legacy key goes in `apikey` and, when no user's token is sent, as the bearer token;
- a secret key goes in `apikey` only: the gateway refuses it as a bearer token and
  refuses it from a browser's user agent, and forwards the request as `service_role`;
- a publishable key goes in `apikey`, with a signed-in user's token as the bearer
  token (or none: the request is `anon`).

vidanim's worker and CLI act as the service role (a legacy service_role key or a
secret key); its client acts for a user (a legacy anon key or a publishable key). A
key of the wrong kind in either place is refused at start, in one line.
"""

from __future__ import annotations

import enum

import jwt


class KeyKind(enum.Enum):
    PUBLISHABLE = "publishable"
    SECRET = "secret"  # noqa: S105 (a kind of key, not a key)
    LEGACY_ANON = "legacy anon"
    LEGACY_SERVICE_ROLE = "legacy service_role"
    LEGACY_OTHER = "legacy JWT of another role"
    UNKNOWN = "not a Supabase API key"


class WrongKey(ValueError):
    """A key of the wrong kind for where it is configured."""


def kind_of(key: str) -> KeyKind:
    key = key.strip()
    if key.startswith("sb_publishable_"):
        return KeyKind.PUBLISHABLE
    if key.startswith("sb_secret_"):
        return KeyKind.SECRET
    try:
        claims = jwt.decode(key, options={"verify_signature": False})
    except jwt.PyJWTError:
        return KeyKind.UNKNOWN
    role = claims.get("role") if isinstance(claims, dict) else None
    if role == "service_role":
        return KeyKind.LEGACY_SERVICE_ROLE
    if role == "anon":
        return KeyKind.LEGACY_ANON
    return KeyKind.LEGACY_OTHER


def request_headers(key: str) -> dict[str, str]:
    """The headers a server-side request carries: a secret key in `apikey` only (the gateway
    refuses it as a bearer token), a legacy key in both."""
    if kind_of(key) is KeyKind.SECRET:
        return {"apikey": key}
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def require_service_key(key: str, variable: str) -> None:
    """The worker's and CLI's key must act as the service role: WrongKey naming `variable` if not."""
    kind = kind_of(key)
    if kind is KeyKind.SECRET or kind is KeyKind.LEGACY_SERVICE_ROLE:
        return
    what = {
        KeyKind.PUBLISHABLE: "a publishable key (sb_publishable_…), which acts as anon",
        KeyKind.LEGACY_ANON: "the legacy anon key",
        KeyKind.LEGACY_OTHER: "a JWT whose role is not service_role",
        KeyKind.UNKNOWN: "no Supabase API key (neither sb_secret_… nor a service_role JWT)",
    }[kind]
    raise WrongKey(
        f"{variable} holds {what}: the worker and the CLI need the project's secret key (sb_secret_…) "
        "or its legacy service_role key"
    )


def require_client_key(key: str, variable: str) -> None:
    """A client's key must be one an app may hold (publishable or legacy anon): a secret one,
    which bypasses RLS, is refused. Anything else is left for Supabase to judge."""
    kind = kind_of(key)
    if kind is KeyKind.SECRET or kind is KeyKind.LEGACY_SERVICE_ROLE:
        raise WrongKey(
            f"{variable} holds a {kind.value} key, which bypasses row-level security and must stay on servers: "
            "a client takes the project's publishable key (sb_publishable_…) or its legacy anon key"
        )
