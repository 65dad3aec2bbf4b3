"""Stream a finished video from the provider into storage, never holding it whole."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from vidanim.media import looks_like_mp4
from vidanim.storage.base import ObjectExists, ObjectInfo, Storage, StorageError
from vidanim.worker.output_hosts import OutputHosts, OutputLookupFailed
from vidanim.worker.output_hosts import OutputUrlRefused as HostRefused

# httpcore reads a response 64 KiB at a time (a class constant it does not expose
# as an option); each read then passes through several Python layers. For a video
# of a gigabyte that per-piece cost halved the relay's throughput, so the worker
# lets a read take up to 1 MiB when that much is waiting. Memory stays bounded by
# the number of concurrent downloads (MAX_DOWNLOADS) times this.
SOCKET_READ_BYTES = 1024 * 1024
# Provider CDNs label MP4s in more than one way.
ACCEPTED_TYPES = ("video/mp4", "application/octet-stream", "binary/octet-stream")
OUTPUT_BUCKET = "video-outputs"
# Redirect hops followed per download, each checked like the first URL.
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def tune_http_reads() -> None:
    """Raise httpcore's per-read size for this process (see SOCKET_READ_BYTES)."""
    import httpcore

    connection = getattr(httpcore, "AsyncHTTP11Connection", None)
    if connection is not None and getattr(connection, "READ_NUM_BYTES", 0) < SOCKET_READ_BYTES:
        connection.READ_NUM_BYTES = SOCKET_READ_BYTES


class OutputUrlExpired(Exception):
    """The provider's output URL no longer works: fetch the task again for a fresh one."""


class OutputUrlRefused(OutputUrlExpired):
    """The URL (or a redirect hop) is not one the worker fetches: not https, a host off the
    provider's allow-list, a non-public address, too many redirects. Not the user's fault
    and never stored: like an expired URL, the task is polled for the provider's own URL."""


class OutputUnavailable(Exception):
    """The download failed in a way that may pass (network, 5xx)."""


class BadOutput(Exception):
    """The provider's file is not a video we will store; `str()` is fit for the user."""


class TooLarge(BadOutput):
    """The video is larger than we store (the bucket's limit, or the worker's)."""


class UploadFailed(Exception):
    """Storage refused or lost the upload; `expected_size` is what was being sent, if known."""

    def __init__(self, error: StorageError, expected_size: int | None):
        super().__init__(str(error))
        self.error = error
        self.expected_size = expected_size


def human_size(size: int) -> str:
    """Bytes as people read them: 10 KB, 12.5 MB, 2.1 GB."""
    if size >= 1e9:
        return f"{size / 1e9:,.1f} GB"
    if size >= 1e6:
        return f"{size / 1e6:,.1f} MB"
    return f"{size / 1e3:,.0f} KB"


def too_large(size: int, max_bytes: int) -> TooLarge:
    return TooLarge(f"The video is {human_size(size)}; this service stores videos of at most {human_size(max_bytes)}.")


async def copy_video(
    http: httpx.AsyncClient, url: str, storage: Storage, path: str, *, max_bytes: int, hosts: OutputHosts
) -> ObjectInfo:
    """Download `url` and upload it as `video-outputs/{path}`, checking type and size.

    The URL and every redirect hop (followed here, at most MAX_REDIRECTS) must pass
    `hosts` (output_hosts.py); a refused one raises OutputUrlRefused. A length the
    provider announces goes to Storage as the Content-Length (the real server checks
    its size limit only then) and is checked against `max_bytes` before a byte is
    sent. Raises OutputUrlExpired (403/404/410), OutputUnavailable (transient),
    BadOutput (TooLarge), ObjectExists when the video is already stored, or
    UploadFailed for any other Storage error.
    """
    try:
        async with _fetch(http, url, hosts) as response:
            if response.status_code in (401, 403, 404, 410):
                raise OutputUrlExpired(f"output URL answered {response.status_code}")
            if response.status_code >= 400:
                raise OutputUnavailable(f"output download answered {response.status_code}")
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type and content_type not in ACCEPTED_TYPES:
                raise BadOutput(f"The provider returned a {content_type} file instead of a video.")
            length = response.headers.get("content-length")
            if length is not None and int(length) > max_bytes:
                raise too_large(int(length), max_bytes)
            size = int(length) if length is not None and "content-encoding" not in response.headers else None
            try:
                return await storage.upload(
                    OUTPUT_BUCKET,
                    path,
                    _checked(response.aiter_bytes(), max_bytes),
                    content_type="video/mp4",
                    size=size,
                )
            except ObjectExists:
                raise
            except StorageError as exc:
                raise UploadFailed(exc, size) from exc
    except httpx.TransportError as exc:
        raise OutputUnavailable(f"output download failed ({type(exc).__name__})") from exc


@contextlib.asynccontextmanager
async def _fetch(http: httpx.AsyncClient, url: str, hosts: OutputHosts) -> AsyncIterator[httpx.Response]:
    """GET `url`, following redirects itself: each hop is checked before it is connected to."""
    target = httpx.URL(url) if _parses(url) else None
    for _ in range(MAX_REDIRECTS + 1):
        try:
            hop = await hosts.check(target if target is not None else url)
        except HostRefused as exc:
            raise OutputUrlRefused(str(exc)) from None
        except OutputLookupFailed as exc:
            raise OutputUnavailable(str(exc)) from None
        request = http.build_request("GET", hop.url, headers=hop.headers, extensions=hop.extensions)
        response = await http.send(request, stream=True, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            try:
                yield response
            finally:
                await response.aclose()
            return
        await response.aclose()
        assert target is not None
        try:
            target = target.join(location)
        except (httpx.InvalidURL, ValueError):
            raise OutputUrlRefused("a redirect named no valid URL") from None
    raise OutputUrlRefused(f"the output URL redirected more than {MAX_REDIRECTS} times")


def _parses(url: str) -> bool:
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return True


async def _checked(chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[bytes]:
    """Pass chunks through, refusing a non-MP4 start, an empty file or too many bytes."""
    size = 0
    head = b""
    async for chunk in chunks:
        if not chunk:
            continue
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
            if len(head) >= 8 and not looks_like_mp4(head):
                raise BadOutput("The provider's file is not an MP4 video.")
        size += len(chunk)
        if size > max_bytes:
            raise too_large(size, max_bytes)
        yield chunk
    if size < 8 or not looks_like_mp4(head):
        raise BadOutput("The provider returned an empty or truncated video.")
