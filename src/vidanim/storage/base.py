"""The storage interface and its errors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# Object names as docs/api.md allows them: no empty, '.' or '..' segment, no leading
# slash, no backslash, no control character.
_BAD_SEGMENT = re.compile(r"(^|/)(\.{1,2})?(/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StorageError(Exception):
    """A storage operation failed.

    `status` is the real status (the body's `statusCode` on Supabase, where most
    errors travel as HTTP 400); `code` is the Storage server's error code
    (`EntityTooLarge`, `InvalidMimeType`, `KeyAlreadyExists`, `NoSuchKey`, ...).
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def entity_too_large(bucket: str) -> StorageError:
    """The Storage server's refusal of an object over the bucket's `file_size_limit`."""
    return StorageError(f"{bucket}: The object exceeded the maximum allowed size", status=413, code="EntityTooLarge")


def invalid_mime_type(content_type: str) -> StorageError:
    """The Storage server's refusal of a type outside the bucket's `allowed_mime_types`."""
    return StorageError(f"mime type {content_type} is not supported", status=415, code="InvalidMimeType")


class ObjectExists(StorageError):
    """An object of that name is already stored (uploads never overwrite)."""


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    path: str
    size: int | None
    content_type: str | None


@dataclass(frozen=True)
class SignedUrl:
    """A bearer URL with an expiry: whoever has it may read the object until then."""

    url: str
    expires_at: datetime


def check_object_name(path: str) -> str:
    """Refuse names that could escape a folder; return the name unchanged."""
    if not path or len(path) > 1024 or path.startswith("/") or "\\" in path:
        raise StorageError(f"invalid object name {path!r}", status=400)
    if _BAD_SEGMENT.search(path) or _CONTROL.search(path):
        raise StorageError(f"invalid object name {path!r}", status=400)
    return path


class Storage(Protocol):
    """What the worker and the client need from object storage."""

    async def info(self, bucket: str, path: str) -> ObjectInfo | None:
        """The stored object, or None."""
        ...

    async def upload(
        self, bucket: str, path: str, chunks: AsyncIterator[bytes], *, content_type: str, size: int | None = None
    ) -> ObjectInfo:
        """Store a new object from a stream, never reading it whole; ObjectExists if present.

        `size`, when known, is announced up front (Content-Length) instead of chunking.
        """
        ...

    async def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        """A signed URL to read the object for `expires_in` seconds."""
        ...

    async def delete(self, bucket: str, paths: list[str]) -> list[str]:
        """Remove objects; returns the names actually deleted (missing or hidden ones are not)."""
        ...

    async def aclose(self) -> None: ...
