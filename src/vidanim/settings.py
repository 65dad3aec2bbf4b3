"""Settings, from the environment (prefix VIDANIM_) or a `.env` file.

Every setting, its default and why, is listed in the README.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from vidanim.pricing import DEFAULT_PRICES_USD_PER_SECOND, UNKNOWN_MODEL_USD_PER_SECOND
from vidanim.webhooks.fal import DEFAULT_JWKS_URLS, url_token


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
            raise LookupError("no database configured: set VIDANIM_DATABASE_URL or pass --database-url")
        return self.database_url.get_secret_value()


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

    # the worker's HTTP server (/metrics, /healthz, /readyz, /webhooks/fal/{job}); off unless a port is set
    # (0: any free port)
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
    local_storage_dir: Path = Path(".vidanim/storage")
    local_storage_secret: SecretStr | None = None
    # where a running worker serves local signed URLs (it prints its address); clients sign for it
    local_storage_url: str | None = None
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_anon_key: SecretStr | None = None

    # verifying users' access tokens (client over a direct connection)
    jwt_secret: SecretStr | None = None  # Supabase's legacy HS256 JWT secret
    jwks_url: str | None = None  # {SUPABASE_URL}/auth/v1/.well-known/jwks.json for asymmetric keys

    # logs
    log_format: Literal["kv", "json"] = "kv"
    log_level: str = "INFO"

    def provider_order(self) -> list[str]:
        return self.providers.split(",")

    def jwks_urls(self) -> list[str]:
        return [u.strip() for u in self.fal_webhook_jwks_urls.split(",") if u.strip()]

    @property
    def fal_webhooks(self) -> bool:
        """Whether fal submissions ask for webhooks (a public URL and a fal key are set)."""
        return bool(self.webhook_public_url) and self.fal_key is not None

    def fal_webhook_url(self, job_id: object) -> str | None:
        """Where fal delivers a job's result, with the URL's token; None when webhooks are off."""
        if not self.webhook_public_url or self.fal_key is None:
            return None
        token = url_token(self.fal_key.get_secret_value(), job_id)
        return f"{self.webhook_public_url.rstrip('/')}/webhooks/fal/{job_id}?token={token}"
