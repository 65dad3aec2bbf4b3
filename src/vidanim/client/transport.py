"""What the client needs from a transport: the SQL API, two reads, and storage."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from vidanim.storage.base import SignedUrl


class Transport(Protocol):
    """One signed-in user's view of vidanim."""

    @property
    def user_id(self) -> uuid.UUID: ...

    def rpc(self, function: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Call a function of the SQL API; rows as JSON-like dicts."""
        ...

    def jobs(self, job_id: uuid.UUID | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The user's own jobs (RLS), newest first; one job when `job_id` is given."""
        ...

    def events(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        """The job's timeline, oldest first."""
        ...

    def upload(self, bucket: str, path: str, data: bytes, content_type: str) -> None:
        """Store an object as the user (storage policies decide)."""
        ...

    def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        """A signed URL for an object the user may read."""
        ...

    def close(self) -> None: ...
