"""`vidanim doctor`: is this deployment able to work? Database, Storage, each provider's credentials.

Each check is cheap and changes nothing: a connection and catalog reads, an `info`
request for an object that does not exist, one authenticated provider call that
bills nothing (Runway's organization endpoint; for fal, the status of a made-up
request, since fal documents no account endpoint for queue keys), and with fal
webhooks on, a read of fal's public key set. The worker checks its providers when
it starts (worker/startup.py): it refuses to start only when every configured
provider refuses its configuration, and waits out an outage.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, LiteralString

import httpx
import psycopg
from psycopg.rows import tuple_row

from vidanim.db import checklist
from vidanim.db.migrate import status as migration_status
from vidanim.providers.base import Provider, ProviderError
from vidanim.settings import Settings
from vidanim.storage.base import StorageError
from vidanim.webhooks.fal import JwksKeys

BUCKETS: LiteralString = "select id, public from storage.buckets where id in ('video-inputs', 'video-outputs')"
# One object the database holds, for Storage to find with the worker's key.
ANY_OBJECT: LiteralString = (
    "select bucket_id, name from storage.objects where bucket_id in ('video-inputs', 'video-outputs') limit 1"
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped (not configured, or what it needs failed first)
    detail: str


async def provider_checks(providers: dict[str, Provider]) -> list[Check]:
    """Each configured provider's credentials, at once."""

    async def one(name: str, provider: Provider) -> Check:
        try:
            return Check(f"provider {name}", True, await provider.check_credentials())
        except ProviderError as exc:
            return Check(f"provider {name}", False, exc.message)

    return list(await asyncio.gather(*(one(n, p) for n, p in providers.items())))


def _database_checks(dsn: str) -> list[Check]:
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            version = conn.execute("select current_setting('server_version')").fetchone()
            checks = [Check("database reachable", True, f"PostgreSQL {version[0] if version else '?'}")]
            try:
                buckets = {r[0]: r[1] for r in conn.execute(BUCKETS).fetchall()}
                results = checklist.run(conn)
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
                conn.rollback()
                pending = [m.filename for m, applied in migration_status(dsn) if not applied]
                return [
                    *checks,
                    Check("migrations current", False, f"{len(pending)} pending: run `vidanim db migrate`"),
                ]
    except psycopg.Error as exc:
        return [Check("database reachable", False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)]
    pending = [m.filename for m, applied in migration_status(dsn) if not applied]
    checks.append(
        Check(
            "migrations current",
            not pending,
            "all applied" if not pending else "pending: " + ", ".join(pending) + " (run `vidanim db migrate`)",
        )
    )
    failing = [r.name for r in results if not r.ok]
    checks.append(
        Check(
            "deployment checklist",
            not failing,
            f"{len(results)} checks pass" if not failing else "failing: " + "; ".join(failing),
        )
    )
    missing = sorted({"video-inputs", "video-outputs"} - set(buckets))
    public = sorted(b for b, is_public in buckets.items() if is_public)
    checks.append(
        Check(
            "buckets present and private",
            not missing and not public,
            "video-inputs and video-outputs, both private"
            if not missing and not public
            else "; ".join([*(f"missing {b}" for b in missing), *(f"{b} is public" for b in public)]),
        )
    )
    return checks


async def storage_check(settings: Settings, storage: Any, pool: Any) -> Check:
    """Storage answers the worker's key as the service role: `info` of an object that does not
    exist must be 'missing', and of one storage.objects holds must find it (a key that may not
    see it, such as the anon key, hears 'missing' for both)."""
    name = f"vidanim-doctor/{uuid.uuid4()}.png"
    try:
        info = await storage.info("video-inputs", name)
        if info is not None:
            return Check("storage reachable", False, "Storage reported an object that does not exist")
        async with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(ANY_OBJECT)
            held = await cur.fetchone()
        if held is not None and await storage.info(held[0], held[1]) is None:
            return Check("storage reachable", False, hidden_message(held[0], held[1]))
    except StorageError as exc:
        return Check("storage reachable", False, f"{settings.storage_backend}: {exc} (code {exc.code})")
    seen = f", and sees {held[0]}/{held[1]}" if held is not None else ""
    return Check("storage reachable", True, f"{settings.storage_backend} storage answers with the worker's key{seen}")


def hidden_message(bucket: str, name: str) -> str:
    return (
        f"Storage's key cannot see {bucket}/{name}, which storage.objects holds: "
        "VIDANIM_SUPABASE_SERVICE_ROLE_KEY is not the service role's key"
    )


async def webhook_check(settings: Settings) -> Check:
    """With fal webhooks on: the HTTP server is configured and fal's key set yields keys."""
    if not settings.webhook_public_url:
        return Check("fal webhooks", None, "off: fal is polled (set VIDANIM_WEBHOOK_PUBLIC_URL to take webhooks)")
    if settings.http_port is None:
        return Check("fal webhooks", False, "VIDANIM_WEBHOOK_PUBLIC_URL needs VIDANIM_HTTP_PORT")
    async with httpx.AsyncClient(timeout=10) as http:
        keys = JwksKeys(settings.jwks_urls(), http)
        found = await keys.current()
    if not found:
        return Check(
            "fal webhooks", False, "no Ed25519 key from " + ", ".join(keys.urls) + ": every delivery would be refused"
        )
    return Check(
        "fal webhooks",
        True,
        f"{len(found)} signing key(s) from fal's JWKS; deliveries to"
        f" {settings.webhook_public_url.rstrip('/')}/webhooks/fal/{{job}}?token=…",
    )


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, in order: database, Storage, providers."""
    from vidanim.worker.assemble import ConfigurationError, build_providers, build_storage
    from vidanim.worker.db import open_pool

    checks = await asyncio.to_thread(_database_checks, settings.require_database_url())
    database_ok = checks[0].ok
    migrated = len(checks) > 2  # an unmigrated database stops after "migrations current"
    if database_ok and migrated:
        pool = open_pool(settings.require_database_url(), size=1)
        await pool.open()
        try:
            storage = build_storage(settings, pool)
            try:
                checks.append(await storage_check(settings, storage, pool))
            finally:
                await storage.aclose()
        except Exception as exc:  # a configuration error names itself
            checks.append(Check("storage reachable", False, str(exc)))
        finally:
            await pool.close()
    else:
        why = "the database is not migrated" if database_ok else "the database is not reachable"
        checks.append(Check("storage reachable", None, f"skipped: {why}"))
    try:
        providers = build_providers(settings)
    except ConfigurationError as exc:
        return [*checks, Check("providers", False, str(exc))]
    try:
        checks += await provider_checks(providers)
    finally:
        await asyncio.gather(*(p.aclose() for p in providers.values()))
    for name in settings.provider_order():
        if name not in providers:
            checks.append(Check(f"provider {name}", None, "not configured (no key)"))
    if "fal" in providers:
        checks.append(await webhook_check(settings))
    return checks
