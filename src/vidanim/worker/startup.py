"""The worker's start-up check of its providers: refuse settings no provider accepts, wait out an outage.

Each configured provider's credentials are checked once, at once, each within
CHECK_SECONDS. What the answers decide:

- every provider refused the configuration itself (a refused key, a model it does not
  have: `OperatorFault.configuration`): the worker refuses to start, in one line. No
  restart mends that, only other settings.
- otherwise the worker starts. A provider in an outage (5xx, refused connection,
  timeout) or with another account fault (no credits) has its breaker opened, as a
  running worker's job would open it after its retries: the jobs wait in `queued`,
  nothing is submitted to it, and when the breaker's open time is up one job probes
  the provider; its success closes the breaker and wakes the others. A check that
  failed for this host's own trouble (`LocalFault`: our DNS, no descriptors) opens
  nothing, since the breaker is shared by every worker.

Under systemd or Kubernetes a worker restarted during an outage is therefore
running when the outage ends, and takes the queued jobs without another restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from vidanim.logs import log_event
from vidanim.providers.base import LocalFault, OperatorFault, Provider, ProviderError, TransientProviderError
from vidanim.settings import Settings
from vidanim.storage.base import Storage
from vidanim.worker.db import ServiceDatabase

log = logging.getLogger("vidanim.worker")

# How long a provider's check may take at start before it counts as an outage.
CHECK_SECONDS = 10.0


class ProvidersRefused(Exception):
    """Every configured provider refused the worker's configuration; the message says what each said."""


@dataclass(frozen=True)
class ProviderHealth:
    """What one provider's check at start said."""

    name: str
    detail: str
    #: None: the provider accepted the worker's credentials
    fault: ProviderError | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def configuration(self) -> bool:
        """The settings are at fault (key, model): a restart with the same settings cannot help."""
        return isinstance(self.fault, OperatorFault) and self.fault.configuration

    @property
    def breaker_kind(self) -> str | None:
        """The breaker kind this answer opens (what a running job would open), None: nothing to open."""
        if isinstance(self.fault, OperatorFault):
            return self.fault.kind
        if isinstance(self.fault, TransientProviderError) and not isinstance(self.fault, LocalFault):
            return "outage"
        return None


async def check_one(name: str, provider: Provider, timeout: float = CHECK_SECONDS) -> ProviderHealth:
    try:
        async with asyncio.timeout(timeout):
            return ProviderHealth(name, await provider.check_credentials())
    except TimeoutError:
        fault = TransientProviderError(f"{name} did not answer its check within {timeout:g} s", code=f"{name}_timeout")
        return ProviderHealth(name, fault.message, fault)
    except ProviderError as exc:
        return ProviderHealth(name, exc.message, exc)


async def check_providers(
    providers: Mapping[str, Provider],
    db: ServiceDatabase,
    *,
    worker_id: str,
    breaker_open_seconds: float,
    timeout: float = CHECK_SECONDS,
) -> list[ProviderHealth]:
    """Check every provider; raise ProvidersRefused when each refused the configuration, else open
    the breakers of the providers that cannot take jobs now and return what each said."""
    health = list(await asyncio.gather(*(check_one(n, p, timeout) for n, p in providers.items())))
    for h in health:
        log_event(
            log,
            "worker.provider_check",
            logging.INFO if h.ok else logging.ERROR,
            check=f"provider {h.name}",
            ok=h.ok,
            kind=h.breaker_kind,
            detail=h.detail,
        )
    if health and all(h.configuration for h in health):
        raise ProvidersRefused(
            "every provider failed its check: " + "; ".join(f"provider {h.name}: {h.detail}" for h in health)
        )
    for h in health:
        if (kind := h.breaker_kind) is not None:
            await _open_breaker(db, h, kind, worker_id=worker_id, seconds=breaker_open_seconds)
    return health


async def _open_breaker(db: ServiceDatabase, h: ProviderHealth, kind: str, *, worker_id: str, seconds: float) -> None:
    try:
        previous, until = await db.open_breaker(h.name, kind, h.detail, seconds)
    except Exception as exc:  # the database is away: the claim loop says so, and jobs open it themselves
        log_event(log, "worker.breaker_open_failed", logging.WARNING, provider=h.name, error=str(exc))
        return
    if previous == "closed":
        log_event(
            log,
            "provider.breaker_opened",
            logging.ERROR,
            provider=h.name,
            kind=kind,
            reason=h.detail,
            open_until=until.isoformat(),
            worker_id=worker_id,
            at="start",
        )


__all__ = ["CHECK_SECONDS", "ProviderHealth", "ProvidersRefused", "check_one", "check_providers"]


async def check_storage(settings: Settings, storage: Storage, pool: AsyncConnectionPool[Any]) -> bool:
    """The doctor's Storage check at start, in one log line. A failure does not stop the worker:
    a refused key opens Storage's breaker at the first job, and jobs wait for the operator."""
    from vidanim.doctor import storage_check

    check = await storage_check(settings, storage, pool)
    log_event(
        log,
        "worker.storage_check",
        logging.INFO if check.ok else logging.ERROR,
        check=check.name,
        ok=check.ok,
        detail=check.detail,
    )
    return bool(check.ok)
