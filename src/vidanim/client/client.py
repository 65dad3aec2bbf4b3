"""VidanimClient: the user-facing operations over any transport."""

from __future__ import annotations

import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from vidanim.client.transport import Transport
from vidanim.errors import InvalidInput, NotFound
from vidanim.images import DEFAULT_RULES, ImageRules, check_image
from vidanim.jobs import TERMINAL, Job
from vidanim.logs import log_event
from vidanim.storage.base import StorageError

log = logging.getLogger("vidanim.client")

INPUT_BUCKET = "video-inputs"
OUTPUT_BUCKET = "video-outputs"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_file_name(name: str) -> str:
    """`name` reduced to `[A-Za-z0-9._-]`, its extension kept: a subset of what Storage
    accepts in an object name, and nothing a URL needs to escape."""
    path = PurePath(name)
    stem = unicodedata.normalize("NFKD", path.stem).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("-", stem).strip("-.")[:100] or "image"
    return stem + _UNSAFE.sub("", path.suffix.lower())


@dataclass(frozen=True)
class Quota:
    daily_limit: int
    used: int
    remaining: int
    max_active_jobs: int
    active_jobs: int
    resets_at: datetime


@dataclass(frozen=True)
class TimelineEvent:
    status: str
    provider: str | None
    provider_status: str | None
    error_code: str | None
    created_at: datetime


@dataclass(frozen=True)
class JobView:
    """A job, and for a completed one a fresh signed URL to its video."""

    job: Job
    video_url: str | None = None
    video_url_expires_at: datetime | None = None

    @property
    def status(self) -> str:
        return self.job.status


def parse_job(row: dict[str, Any]) -> Job:
    """A job from a database row or from PostgREST's JSON (strings for ids and times)."""
    values = dict(row)
    for key in ("id", "user_id"):
        if isinstance(values.get(key), str):
            values[key] = uuid.UUID(values[key])
    for key in ("next_attempt_at", "locked_until", "created_at", "updated_at", "started_at", "completed_at"):
        if isinstance(values.get(key), str):
            values[key] = datetime.fromisoformat(values[key])
    return Job.from_row(values)


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class VidanimClient:
    def __init__(self, transport: Transport, *, image_rules: ImageRules = DEFAULT_RULES):
        """`image_rules`: what the configured providers accept (`vidanim.images.rules_for`)."""
        self.transport = transport
        self.image_rules = image_rules
        self._input_limits: tuple[int | None, list[str] | None] | None = None

    @property
    def user_id(self) -> uuid.UUID:
        return self.transport.user_id

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> VidanimClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # images ----------------------------------------------------------------------
    def input_limits(self) -> tuple[int | None, list[str] | None]:
        """The input bucket's size limit and allowed types (asked once per client)."""
        if self._input_limits is None:
            rows = self.transport.rpc("get_video_input_limits", {})
            row = rows[0] if rows else {}
            self._input_limits = (row.get("file_size_limit"), row.get("allowed_mime_types"))
        return self._input_limits

    def upload_image(self, image: Path | bytes, *, name: str | None = None) -> str:
        """Check an input image, then upload it into the user's folder; returns its object name.

        The image is decoded first (`vidanim.images.check_image`): anything Storage or
        the configured providers would refuse raises InvalidInput, and nothing is
        uploaded. The object is named after the file, reduced to characters every
        Storage server and URL accepts, behind a short random prefix; `name` gives the
        exact object name instead (it must already be such a name).
        """
        if isinstance(image, Path):
            try:
                data = image.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"{image}: cannot read the file ({exc.strerror or exc})") from None
            shown = image.name
        else:
            data = image
            shown = name or "image.png"
        size_limit, types = self.input_limits()
        checked = check_image(data, name or shown, rules=self.image_rules, size_limit=size_limit, allowed_types=types)
        if name is not None:
            if name != safe_file_name(name):
                raise InvalidInput(f"{name!r}: an object name may hold only letters, digits, '.', '_' and '-'")
            object_name = name
        else:
            object_name = f"{uuid.uuid4().hex[:8]}-{safe_file_name(shown)}"
        path = f"{self.user_id}/{object_name}"
        self.transport.upload(INPUT_BUCKET, path, checked.data, checked.content_type)
        return path

    # jobs ----------------------------------------------------------------------------
    def request_animation(
        self,
        image_path: str,
        prompt: str | None = None,
        options: dict[str, Any] | None = None,
        client_request_id: str | None = None,
    ) -> Job:
        """Create a job (or get the one this client_request_id already made)."""
        request_id = client_request_id or str(uuid.uuid4())
        rows = self.transport.rpc(
            "request_video_animation",
            {
                "p_input_image_path": image_path,
                "p_prompt": prompt,
                "p_options": options or {},
                "p_client_request_id": request_id,
            },
        )
        job = parse_job(rows[0])
        log_event(log, "job.created", job_id=str(job.id), user_id=str(job.user_id), client_request_id=request_id)
        return job

    def get_job(self, job_id: uuid.UUID | str, *, url_expires_in: int = 3600) -> JobView:
        """The job; when completed, with a freshly signed URL (an old URL is never a dead end)."""
        rows = self.transport.jobs(uuid.UUID(str(job_id)))
        if not rows:
            raise NotFound(f"video job {job_id} not found")
        job = parse_job(rows[0])
        if job.status == "completed" and job.output_video_path:
            try:
                signed = self.transport.sign(OUTPUT_BUCKET, job.output_video_path, url_expires_in)
            except StorageError as exc:
                if exc.status != 503:
                    raise
                return JobView(job)  # this transport cannot sign here (local storage without a server)
            return JobView(job, signed.url, signed.expires_at)
        return JobView(job)

    def list_jobs(self, limit: int = 50) -> list[Job]:
        return [parse_job(r) for r in self.transport.jobs(limit=limit)]

    def timeline(self, job_id: uuid.UUID | str) -> list[TimelineEvent]:
        return [
            TimelineEvent(
                r["status"], r.get("provider"), r.get("provider_status"), r.get("error_code"), _time(r["created_at"])
            )
            for r in self.transport.events(uuid.UUID(str(job_id)))
        ]

    def cancel(self, job_id: uuid.UUID | str) -> Job:
        return parse_job(self.transport.rpc("cancel_video_job", {"p_job_id": str(job_id)})[0])

    def quota(self) -> Quota:
        row = self.transport.rpc("get_video_quota", {})[0]
        return Quota(
            row["daily_limit"],
            row["used"],
            row["remaining"],
            row["max_active_jobs"],
            row["active_jobs"],
            _time(row["resets_at"]),
        )

    def wait(
        self,
        job_id: uuid.UUID | str,
        *,
        timeout: float = 900.0,
        poll_seconds: float = 1.0,
        on_change: Callable[[JobView], None] | None = None,
    ) -> JobView:
        """Follow a job until it ends; `on_change` sees every new status, provider status, wait or progress."""
        deadline = time.monotonic() + timeout
        seen: tuple[str, str | None, str | None, int | None, int | None] | None = None
        while True:
            view = self.get_job(job_id)
            state = (
                view.job.status,
                view.job.provider_status,
                view.job.waiting_reason,
                view.job.progress,
                view.job.queue_position,
            )
            if state != seen:
                seen = state
                if on_change:
                    on_change(view)
            if view.job.status in TERMINAL:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"video job {job_id} did not finish within {timeout:g} s")
            time.sleep(poll_seconds)
