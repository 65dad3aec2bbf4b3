"""Deliver once: the finished video, streamed from the provider into Storage, verified, and the job completed.

A video already stored (a worker died after uploading) is not fetched again; a
duplicate upload is "already stored"; after an upload error Storage is asked what
it holds (a whole object is taken, a partial one removed). An expired or
unreachable output URL is replaced by polling the task again; after
DELIVERY_ATTEMPTS the job waits, and is never submitted a second time. Storage
refusing the worker's key, or down, makes the job wait (`Stage._storage_fault`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from vidanim.errors import Conflict
from vidanim.jobs import Job
from vidanim.logs import log_event, safe_url
from vidanim.providers.base import Provider, ProviderError, TaskStatus
from vidanim.storage.base import ObjectExists, ObjectInfo, StorageError
from vidanim.worker.control import JobControl, Stage, StageContext
from vidanim.worker.output_hosts import output_hosts
from vidanim.worker.transfer import (
    OUTPUT_BUCKET,
    BadOutput,
    OutputUnavailable,
    OutputUrlExpired,
    TooLarge,
    UploadFailed,
    copy_video,
    human_size,
)

log = logging.getLogger("vidanim.worker")

TOO_LARGE = "The video is larger than this service stores."
# Storage refusals that are the operator's to fix (the key) or ours (the type): jobs wait.
OPERATOR_STORAGE_FAULTS = (401, 403, 415)
DELIVERY_ATTEMPTS = 4
# Videos streamed at once per worker; more would only split the bandwidth (and see
# MAX_IN_FLIGHT in providers/base.py for why requests wait on our semaphore).
MAX_DOWNLOADS = 16


class VideoDelivery(Stage):
    """From a completed task to a completed job: the video in video-outputs/{user}/{job}.mp4."""

    def __init__(self, context: StageContext):
        super().__init__(context)
        self._downloads = asyncio.Semaphore(MAX_DOWNLOADS)
        self.output_hosts = {name: output_hosts(context.settings, name) for name in context.providers}

    async def deliver(
        self, job: Job, provider: Provider, task_id: str, status: TaskStatus, control: JobControl
    ) -> None:
        fields = self._fields(job, provider=provider.name, task_id=task_id, path=f"{OUTPUT_BUCKET}/{job.output_path}")
        probe = await self._storage_gate(job)
        if probe is None:
            return
        try:
            info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
        except StorageError as exc:
            await self._storage_fault(job, exc, fields)
            return
        if probe:
            await self._storage_answered(job)
        if info is not None:
            log_event(log, "upload.skipped", **fields, reason="already stored", size=info.size)
        limit = await self.db.bucket_size_limit(OUTPUT_BUCKET)
        max_bytes = min(self.settings.output_max_bytes, limit) if limit else self.settings.output_max_bytes
        attempt = 0
        while info is None:
            log_event(log, "upload.started", **fields, source=safe_url(status.output_url))
            try:
                assert status.output_url is not None
                async with self._downloads:
                    info = await copy_video(
                        self.http,
                        status.output_url,
                        self.storage,
                        job.output_path,
                        max_bytes=max_bytes,
                        hosts=self.output_hosts[provider.name],
                    )
                log_event(log, "upload.completed", **fields, size=info.size)
            except ObjectExists:
                info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
                log_event(log, "upload.skipped", **fields, reason="stored concurrently")
            except BadOutput as exc:
                code = "output_too_large" if isinstance(exc, TooLarge) else "bad_output"
                await self._fail(job, code, str(exc), status.raw_status, task=(provider.name, task_id))
                return
            except UploadFailed as failed:
                refusal = failed.error
                if refusal.status == 413:  # the video itself: over a limit Storage enforces (the project's)
                    message = TOO_LARGE
                    if size := failed.expected_size:
                        message = f"The video is {human_size(size)}, larger than this service stores."
                    await self._fail(job, "output_too_large", message, status.raw_status, task=(provider.name, task_id))
                    return
                attempt += 1
                if refusal.status in OPERATOR_STORAGE_FAULTS or attempt >= DELIVERY_ATTEMPTS:
                    await self._storage_fault(job, refusal, fields)
                    return
                # Lost on the way (a dropped connection, a 5xx): perhaps stored all the same.
                try:
                    info = await self._stored_after_error(job, failed.expected_size, fields)
                except StorageError as exc:
                    await self._storage_fault(job, exc, fields)
                    return
                if info is None:
                    log_event(log, "upload.retry", logging.WARNING, **fields, reason=str(refusal))
                    await control.wait(self._delay(attempt - 1))
            except (OutputUrlExpired, OutputUnavailable) as exc:
                attempt += 1
                if attempt >= DELIVERY_ATTEMPTS:
                    # The video is made and paid for: wait and fetch it again later (a fresh
                    # poll hands out a fresh URL), never submit the job a second time.
                    await self._wait(
                        job,
                        "output_unavailable",
                        self.settings.storage_wait_seconds,
                        logging.WARNING,
                        provider=provider.name,
                        task_id=task_id,
                    )
                    return
                log_event(log, "upload.retry", logging.WARNING, **fields, reason=str(exc))
                if isinstance(exc, OutputUnavailable):
                    await control.wait(self._delay(attempt - 1))
                try:
                    # Output URLs expire (Runway: 24-48 h): polling again hands out a fresh one.
                    status = await self._poll(provider, task_id)
                except ProviderError as perr:
                    log_event(log, "status.poll_failed", logging.WARNING, **fields, reason=perr.message)
                    await control.wait(self._delay(attempt - 1))
        try:
            await self.db.update_status(
                job.id,
                "completed",
                worker_id=self.worker_id,
                output_video_path=job.output_path,
                provider_status=status.raw_status,
            )
        except Conflict as exc:
            log_event(log, "job.complete_refused", logging.WARNING, **fields, reason=exc.message)
            return
        log_event(log, "job.completed", **fields)
        self.metrics.observe_end(provider.name, "completed", None, job.attempts)

    async def _stored_after_error(
        self, job: Job, expected_size: int | None, fields: dict[str, Any]
    ) -> ObjectInfo | None:
        """After an upload error: the object, if it is there whole; a partial one is removed."""
        info = await self.storage.info(OUTPUT_BUCKET, job.output_path)
        if info is None:
            return None
        if expected_size is None or info.size == expected_size:
            log_event(log, "upload.completed", **fields, size=info.size, reason="stored despite the error")
            return info
        log_event(log, "upload.partial", logging.WARNING, **fields, size=info.size, expected=expected_size)
        await self.storage.delete(OUTPUT_BUCKET, [job.output_path])
        return None
