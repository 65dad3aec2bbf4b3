"""Settings, from the environment (prefix VIDANIM_) or a `.env` file.

Every setting, its default and why, is listed in the README.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseSettings):
    """Where the database is."""

    model_config = SettingsConfigDict(env_prefix="VIDANIM_", env_file=".env", extra="ignore")

    # A direct or session-mode (port 5432) connection as a role that may act as
    # service_role. Supabase's transaction pooler (6543) is not enough for the
    # worker: it holds leases and session state.
    database_url: SecretStr | None = Field(default=None)

    def require_database_url(self) -> str:
        if self.database_url is None or not self.database_url.get_secret_value().strip():
            raise LookupError("no database configured: set VIDANIM_DATABASE_URL or pass --database-url")
        return self.database_url.get_secret_value()
