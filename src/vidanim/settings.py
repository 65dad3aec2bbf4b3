"""Settings, from the environment (prefix VIDANIM_) or a `.env` file.

Every setting, its default and why, is listed in the README.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import psycopg
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vidanim.pricing import DEFAULT_PRICES_USD_PER_SECOND, UNKNOWN_MODEL_USD_PER_SECOND
from vidanim.webhooks.fal import DEFAULT_JWKS_URLS


class InvalidSetting(LookupError):
    """A setting is missing or malformed: the message names the variable and what it takes."""


def _default_storage_dir() -> Path:
    """Local storage's home: the user's data directory, never the working directory, so every
    command sees the same files and reports paths that exist wherever it runs."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vidanim" / "storage"


def _default_worker_id() -> str:
    """A random id: it is the lease holder's name in `video_jobs.locked_by`, which the job's
    user reads, so it says nothing of the host or process (the start-up log line does)."""
    return f"w-{secrets.token_hex(6)}"


class DatabaseSettings(BaseSettings):
    """Where the database is."""

    model_config = SettingsConfigDict(env_prefix="VIDANIM_", env_file=".env", extra="ignore")

    # A direct or session-mode (port 5432) connection as a role that may act as
    # service_role. Supabase's transaction pooler (6543) is not enough for the
    # worker: it holds session state (the role) between statements.
    database_url: SecretStr | None = Field(default=None)

    def require_database_url(self) -> str:
        if self.database_url is None or not self.database_url.get_secret_value().strip():
            raise InvalidSetting("no database configured: set VIDANIM_DATABASE_URL or pass --database-url")
        url = self.database_url.get_secret_value()
        check_database_url(url)
        return url


def check_database_url(url: str) -> None:
    """Refuse what libpq cannot parse, in one line (a URL's password is never echoed)."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).splitlines()[0] if "://" not in url else "not a valid URL"
        raise InvalidSetting(
            f"the database URL is not one PostgreSQL accepts ({reason}): "
            "give postgresql://USER:PASSWORD@HOST:5432/DATABASE in VIDANIM_DATABASE_URL or --database-url"
        ) from None


class Settings(DatabaseSettings):
    """Everything the worker needs."""

    # worker
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=255, pattern=r"^\S+$")
    worker_concurrency: int = Field(default=50, ge=1, le=5000)
    worker_claim_batch: int = Field(default=20, ge=1, le=1000)
    # LISTEN for due jobs on a connection of its own (needs a direct or session-mode connection)
    worker_listen: bool = True
    worker_idle_poll_seconds: float = Field(default=1.0, gt=0)
    # A lease must outlive a few missed renewals: renewals run every lease / 5.
    worker_lease_seconds: int = Field(default=300, ge=2, le=86400)
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    worker_db_pool_size: int = Field(default=10, ge=1, le=200)
    # /metrics reads the queue's state at most once per this many seconds, whoever scrapes
    metrics_cache_seconds: float = Field(default=5.0, ge=0, le=3600)
    # prune jobs that ended this many days ago (0041), every worker_prune_every_seconds; None: never
    worker_prune_older_than_days: int | None = Field(default=None, ge=1, le=36500)
    worker_prune_every_seconds: float = Field(default=3600.0, gt=0)
    worker_prune_batch_size: int = Field(default=1000, ge=1, le=10000)
    # give up on a provider task after this long, cancel it and fail the job
    job_deadline_seconds: float = Field(default=1800.0, gt=0)
    # submission tries per provider before falling back to the next
    submit_attempts: int = Field(default=3, ge=1, le=20)
    # job-level (re)submissions before a job fails for good
    job_max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=2.0, ge=0)
    retry_cap_seconds: float = Field(default=300.0, ge=0)
    # a provider's breaker, once opened by an operator's fault, stays open this long before one job probes it
    breaker_open_seconds: float = Field(default=60.0, ge=0, le=86400)
    # a job Storage refused (our key, our bug) or could not take waits this long, then tries again
    storage_wait_seconds: float = Field(default=60.0, ge=0, le=86400)
    # signed URL handed to the provider for the input image
    input_url_expiry_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    output_max_bytes: int = Field(default=2 * 1024**3, ge=1)

    # providers, in the order they are tried
    providers: str = Field(default="fal,runway", pattern=r"^(fal|runway)(,(fal|runway))*$")
    fal_key: SecretStr | None = None
    fal_queue_url: str = "https://queue.fal.run"
    fal_model: str = "fal-ai/kling-video/v2.1/standard/image-to-video"
    fal_poll_seconds: float = Field(default=3.0, gt=0)
    runway_api_secret: SecretStr | None = None
    runway_base_url: str = "https://api.dev.runwayml.com"
    runway_model: str = "gen4_turbo"
    runway_poll_seconds: float = Field(default=6.0, gt=0)
    # Runway asks for no more than one poll per 5 s; only the simulator may go faster.
    runway_enforce_min_poll: bool = True
    provider_timeout_seconds: float = Field(default=60.0, gt=0)
    # the most tasks in flight at each provider across every worker, e.g. {"runway": 2} (Runway's
    # tier limit, fal's account concurrency); a worker writes these to the database when it starts
    provider_max_in_flight: dict[str, int] = Field(default_factory=dict)
    # a job whose every provider is at its cap waits this long before it looks again
    provider_busy_wait_seconds: float = Field(default=5.0, ge=0, le=3600)
    # the price table behind each submission's estimated cost (docs/providers.md gives the sources)
    prices_usd_per_second: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_PRICES_USD_PER_SECOND))
    price_unknown_model_usd_per_second: float = Field(default=UNKNOWN_MODEL_USD_PER_SECOND, ge=0)
    # requests in flight per provider; more jobs than this wait their turn (see providers/base.py)
    provider_max_connections: int = Field(default=32, ge=1, le=1000)

    # the worker's public listener: only POST /webhooks/fal/{job}, where WEBHOOK_PUBLIC_URL routes;
    # off unless a port is set (0: any free port). /metrics and the health checks are on OPERATOR_PORT.
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # where fal reaches that server from the internet (e.g. https://hooks.example.com): when set, each
    # fal submission asks for a webhook at {this}/webhooks/fal/{job id} and polling slows to the fallback
    webhook_public_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    # fal's public keys (comma-separated URLs, every key of every set is tried)
    fal_webhook_jwks_urls: str = ",".join(DEFAULT_JWKS_URLS)
    # with webhooks on, a fal task is still polled this often, so a lost webhook delays a job, never strands it
    fal_webhook_poll_seconds: float = Field(default=30.0, gt=0)
    # a job whose submission lost its answer waits this long for the provider to name the task (with
    # webhooks) before it is submitted once more (at most once per job)
    uncertain_submission_wait_seconds: float = Field(default=300.0, ge=0, le=86400)

    # storage
    storage_backend: Literal["local", "supabase"] = "local"
    # an absolute directory by default (the user's data directory); a relative one is made absolute
    # where the settings are read, so paths the commands print exist wherever they are opened
    local_storage_dir: Path = Field(default_factory=_default_storage_dir)
    local_storage_secret: SecretStr | None = None
    # where a running worker serves local signed URLs (it prints its address); clients sign for it
    local_storage_url: str | None = None
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_anon_key: SecretStr | None = None

    # verifying users' access tokens (client over a direct connection)
    jwt_secret: SecretStr | None = None  # Supabase's legacy HS256 JWT secret
    jwks_url: str | None = None  # {SUPABASE_URL}/auth/v1/.well-known/jwks.json for asymmetric keys

    # the operators' dashboard (`vidanim dashboard`, docs/dashboard.md): loopback unless configured
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8780, ge=0, le=65535)
    # signs session cookies; without it a random one is drawn (sessions end with the process)
    dashboard_session_secret: SecretStr | None = None
    dashboard_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # sign-in without Supabase Auth: one password per role (unset: that role cannot sign in so)
    dashboard_viewer_password: SecretStr | None = None
    dashboard_operator_password: SecretStr | None = None

    # logs
    log_format: Literal["kv", "json"] = "kv"
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"use one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("local_storage_dir")
    @classmethod
    def _absolute_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    # fal webhook trust (migration 0034, docs/worker.md "Webhook trust")
    # our fal account's user id: a delivery fal signed for any other account is refused. Unset: every
    # delivery is refused (jobs are polled) and the id seen is logged once, so an operator can learn it
    fal_webhook_user_id: str | None = Field(default=None, min_length=1, max_length=255)
    # a submission's webhook URL token is accepted for the job's deadline plus this long (fal retries
    # a delivery for a while after the task ends)
    fal_webhook_token_margin_seconds: float = Field(default=3600.0, ge=0, le=7 * 86400)
    # where provider outputs may be downloaded from, https only: comma-separated hosts, "*.example.com"
    # matching any subdomain (docs/providers.md gives the sources)
    fal_output_hosts: str = "fal.media,*.fal.media"
    runway_output_hosts: str = "dnznrvs05pmza.cloudfront.net,*.runwayml.com"
    # development only: "host:port" entries (the simulator's) fetched over http and allowed on loopback
    # or private addresses, for every provider; empty in production
    output_dev_hosts: str = ""
    # the operator listener: /metrics, /healthz, /readyz; off unless a port is set (0: any free port).
    # Keep it private: it tells spend, cap and breaker reasons, and each scrape queries the database.
    operator_host: str = "127.0.0.1"
    operator_port: int | None = Field(default=None, ge=0, le=65535)
    # a connection to either listener must send its whole request headers within this long, and then its
    # body within http_body_timeout_seconds, or it is closed (a slow-loris holds descriptors forever)
    http_header_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    # connections the public listener holds at once; beyond that each is answered 503 and closed unread.
    # With the worker's own sockets it must stay well under the open-files limit.
    http_max_connections: int = Field(default=256, ge=1, le=100_000)
    # at start, raise the soft open-files limit (RLIMIT_NOFILE) to the hard one
    worker_raise_open_files: bool = True

    def provider_order(self) -> list[str]:
        return self.providers.split(",")

    def jwks_urls(self) -> list[str]:
        return [u.strip() for u in self.fal_webhook_jwks_urls.split(",") if u.strip()]

    @property
    def fal_webhooks(self) -> bool:
        """Whether fal submissions ask for webhooks (a public URL and a fal key are set)."""
        return bool(self.webhook_public_url) and self.fal_key is not None

    def fal_webhook_url(self, job_id: object, token: str) -> str | None:
        """Where fal delivers one submission's result, with that submission's token; None when webhooks are off."""
        if not self.webhook_public_url or self.fal_key is None:
            return None
        return f"{self.webhook_public_url.rstrip('/')}/webhooks/fal/{job_id}?token={token}"

    def webhook_token_seconds(self) -> float:
        """How long a submission's webhook URL token is accepted: the job's deadline and the margin."""
        return self.job_deadline_seconds + self.fal_webhook_token_margin_seconds

    def output_hosts(self, provider: str) -> list[str]:
        """The host patterns a provider's output URLs may name (https only)."""
        listed = self.fal_output_hosts if provider == "fal" else self.runway_output_hosts
        return [h.strip().lower() for h in listed.split(",") if h.strip()]

    def output_dev_host_list(self) -> list[str]:
        return [h.strip().lower() for h in self.output_dev_hosts.split(",") if h.strip()]


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
assert all(isinstance(logging.getLevelName(name), int) for name in LOG_LEVELS)

_FIELD_IN_SETTINGS_ERROR = re.compile(r'field "([a-z0-9_]+)"')


def variable(field: str) -> str:
    """The environment variable behind a setting."""
    return f"VIDANIM_{field.upper()}"


def describe(exc: ValidationError | SettingsError) -> str:
    """One line naming the variable at fault and what it takes."""
    if isinstance(exc, SettingsError):
        match = _FIELD_IN_SETTINGS_ERROR.search(str(exc))
        name = variable(match.group(1)) if match else "a VIDANIM_ variable"
        return f"{name} is not valid JSON (a mapping looks like '{{\"runway:gen4_turbo\": 0.05}}')"
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    given = first.get("input")
    shown = (
        ""
        if isinstance(given, SecretStr) or any(w in field for w in ("key", "secret", "password", "url"))
        else f" (got {given!r})"
    )
    message = first["msg"].removeprefix("Value error, ")
    return f"{variable(field.split('.')[0])}: {message}{shown}"


def load_settings(database_url: str | None = None) -> Settings:
    """The settings from the environment, with `--database-url` over the variable; InvalidSetting
    (one line, the variable named) when one is malformed."""
    try:
        values = Settings()
    except (ValidationError, SettingsError) as exc:
        raise InvalidSetting(describe(exc)) from None
    if database_url:
        values = values.model_copy(update={"database_url": SecretStr(database_url)})
    values.require_database_url()
    return values
