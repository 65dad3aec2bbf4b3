"""Supabase Storage over its HTTP API, as the service role.

Speaks the REST API storage3 wraps (`{SUPABASE_URL}/storage/v1`, the routes of
the open-source supabase/storage server), with httpx so an upload body can be an async
stream straight from the provider's download: a standard upload (`POST
/object/{bucket}/{path}`) with a raw streamed body and an explicit content type,
never `x-upsert`, so a second upload of the same job's video is refused instead of
silently replacing it. How the real server behaves, and why this module does what
it does, is in docs/storage.md:

- Errors are HTTP 400 with the real status in the body's `statusCode` and the reason
  in `code`; both are read (`StorageError.status`, `.code`).
- `info` uses `/object/info/authenticated/...`: the plain route answers a wrong key
  as anon ("Bucket not found"), which would make every object look missing.
- The server answers a refused upload before reading its body and then stops
  reading the connection, so every upload goes on a connection of its own
  (`Connection: close`): a refusal never poisons the next request.
- Signed URLs come back relative and not percent-encoded: the name is encoded here.
- DELETE answers the objects it deleted; anything else was not deleted.
- A key that may not see an object (the anon key, RLS) hears `NoSuchKey` from `info` and
  `sign`, as for a missing object. With a catalog (`storage.objects` through the service
  role's database connection), an object the database holds that Storage calls missing
  raises `HiddenObject` (status 403): the key is at fault, not the object.
- Keys of both generations (vidanim/supabase_keys.py): a secret key (`sb_secret_…`) is
  sent in `apikey` only, a legacy JWT in `apikey` and as the bearer token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from vidanim.storage.base import ObjectExists, ObjectInfo, SignedUrl, StorageError, check_object_name
from vidanim.storage.catalog import ObjectCatalog
from vidanim.supabase_keys import request_headers


class HiddenObject(StorageError):
    """Storage calls an object missing that storage.objects holds: its key cannot see it."""

    def __init__(self, bucket: str, path: str):
        super().__init__(
            f"Storage's key cannot see {bucket}/{path}, which storage.objects holds: the configured key "
            "is not the service role's (VIDANIM_SUPABASE_SERVICE_ROLE_KEY)",
            status=403,
            code="HiddenByKey",
        )


def _status(response: httpx.Response) -> int:
    """The real status: the body's statusCode when Storage sends one."""
    try:
        body = response.json()
    except ValueError:
        return response.status_code
    if isinstance(body, dict) and str(body.get("statusCode", "")).isdigit():
        return int(body["statusCode"])
    return response.status_code


def _code(response: httpx.Response) -> str | None:
    """Storage's error code (`KeyAlreadyExists`, `EntityTooLarge`, ...), if the body has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _failed(response: httpx.Response, what: str) -> StorageError:
    status = _status(response)
    return StorageError(f"storage {what} failed ({status}): {_message(response)}", status=status, code=_code(response))


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message") or body.get("error") or body)[:200] if isinstance(body, dict) else str(body)[:200]


def encode_signed_path(signed: str) -> str:
    """Percent-encode the object name of a relative signed URL (`/object/sign/b/n?token=t`)."""
    path, sep, query = signed.partition("?")
    return quote(path, safe="/") + sep + query


class SupabaseStorage:
    def __init__(
        self,
        *,
        supabase_url: str,
        service_role_key: str,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        catalog: ObjectCatalog | None = None,
    ):
        self.base_url = supabase_url.rstrip("/") + "/storage/v1"
        self.catalog = catalog
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=request_headers(service_role_key),
            timeout=timeout or httpx.Timeout(60.0, connect=10.0, write=300.0),
            transport=transport,
        )

    @staticmethod
    def _key(bucket: str, path: str) -> str:
        return f"{quote(bucket, safe='')}/{quote(check_object_name(path), safe='/')}"

    async def _missing_or_hidden(self, bucket: str, path: str) -> None:
        """Storage said NoSuchKey: HiddenObject if the database holds the object after all."""
        if self.catalog is not None and await self.catalog.holds(bucket, path):
            raise HiddenObject(bucket, path)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise StorageError(f"storage could not be reached ({type(exc).__name__})", status=503) from exc

    async def info(self, bucket: str, path: str) -> ObjectInfo | None:
        response = await self._send("GET", f"/object/info/authenticated/{self._key(bucket, path)}")
        status = _status(response)
        if status == 404 and _code(response) in (None, "NoSuchKey", "not_found"):
            await self._missing_or_hidden(bucket, path)
            return None
        if not response.is_success or status >= 400:
            raise _failed(response, "info")
        body = response.json()
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        size = body.get("size", meta.get("size") if meta else None)
        content_type = body.get("content_type") or (meta.get("mimetype") if meta else None)
        return ObjectInfo(bucket, path, int(size) if size is not None else None, content_type)

    async def upload(
        self, bucket: str, path: str, chunks: AsyncIterator[bytes], *, content_type: str, size: int | None = None
    ) -> ObjectInfo:
        headers = {
            "Content-Type": content_type,
            "x-upsert": "false",
            "cache-control": "max-age=3600",
            "Connection": "close",
        }
        if size is not None:
            headers["Content-Length"] = str(size)
        announced = size
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        response = await self._send(
            "POST",
            f"/object/{self._key(bucket, path)}",
            content=counted(),
            headers=headers,
        )
        status = _status(response)
        if status == 409:
            raise ObjectExists(f"{bucket}/{path} already exists", status=409, code="KeyAlreadyExists")
        if not response.is_success or status >= 400:
            raise _failed(response, "upload")
        if announced is not None and announced != size:
            raise StorageError(f"upload of {bucket}/{path} sent {size} bytes, not {announced}", status=400)
        return ObjectInfo(bucket, path, size, content_type)

    async def sign(self, bucket: str, path: str, expires_in: int) -> SignedUrl:
        response = await self._send("POST", f"/object/sign/{self._key(bucket, path)}", json={"expiresIn": expires_in})
        status = _status(response)
        if status == 404 and _code(response) in (None, "NoSuchKey", "not_found"):
            await self._missing_or_hidden(bucket, path)
        if not response.is_success or status >= 400:
            raise _failed(response, f"signing of {bucket}/{path}")
        signed = response.json().get("signedURL") or response.json().get("signedUrl")
        if not isinstance(signed, str):
            raise StorageError("storage answered without a signed URL", status=502)
        url = signed if signed.startswith("http") else self.base_url + encode_signed_path(signed)
        return SignedUrl(url=url, expires_at=datetime.now(UTC) + timedelta(seconds=expires_in))

    async def delete(self, bucket: str, paths: list[str]) -> list[str]:
        for p in paths:
            check_object_name(p)
        response = await self._send("DELETE", f"/object/{quote(bucket, safe='')}", json={"prefixes": paths})
        status = _status(response)
        if not response.is_success or status >= 400:
            raise _failed(response, "delete")
        body = response.json()
        return [str(o["name"]) for o in body if isinstance(o, dict) and "name" in o] if isinstance(body, list) else []

    async def aclose(self) -> None:
        await self._client.aclose()
