"""The job as the worker sees it: a typed view of a `video_jobs` row."""

from __future__ import annotations

import uuid
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import Any

ACTIVE = ("queued", "processing")
TERMINAL = ("completed", "failed", "canceled")
# What a waiting job's `waiting_reason` means, for the people who wait.
WAITING_REASONS = {
    "storage_unavailable": "Your video is made and waits to be stored; this takes longer than usual.",
    "output_unavailable": "Your video is made; fetching it from the provider takes longer than usual.",
    "budget_reached": "Today's video budget is used up; your video starts when it is renewed.",
    "provider_busy": "The video providers are busy; your video starts in a moment.",
    "providers_unavailable": "The video providers are not available right now; your video starts as soon as they are.",
    "provider_unconfigured": "Your video is being made; following it takes longer than usual.",
    "submission_uncertain": "The video provider did not confirm your request; we are checking before trying again.",
}


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    user_id: uuid.UUID
    status: str
    input_image_path: str
    prompt: str | None
    options: dict[str, Any]
    client_request_id: str | None
    provider: str | None
    provider_task_id: str | None
    provider_status: str | None
    output_video_path: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    next_attempt_at: datetime
    locked_by: str | None
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    #: why a job the worker left for later is waiting (a code, see WAITING_REASONS)
    waiting_reason: str | None = None
    #: 0-100 while the provider says how far along it is
    progress: int | None = None
    #: the place in the provider's queue while it says
    queue_position: int | None = None
    #: submissions that may have started a paid task, and those whose answer was lost
    provider_submissions: int = 0
    uncertain_submissions: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        values: dict[str, Any] = {
            f.name: row.get(f.name, None if f.default is MISSING else f.default) for f in fields(cls)
        }
        return cls(**values)

    @property
    def waiting_message(self) -> str | None:
        """The waiting reason in words a user reads, or None when the job is not waiting."""
        if self.waiting_reason is None:
            return None
        return WAITING_REASONS.get(self.waiting_reason, "Your video is delayed; it will continue on its own.")

    @property
    def output_path(self) -> str:
        """Where the job's video goes in `video-outputs` (one name per job, ever)."""
        return f"{self.user_id}/{self.id}.mp4"
