"""fal.ai queue API (https://queue.fal.run): submit, status, result, cancel.

Written against fal's documented HTTP API (https://docs.fal.ai/model-endpoints/queue):
`Authorization: Key <FAL_KEY>`; POST /{model} returns request_id and the status,
response and cancel URLs, which we follow rather than rebuild; the status endpoint
answers IN_QUEUE / IN_PROGRESS / COMPLETED, and a failed request still reaches
COMPLETED, with `error` in the status or an HTTP error from the result.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import httpx

from vidanim.providers.base import (
    MAX_IN_FLIGHT,
    TRANSIENT_HTTP,
    InputRefused,
    OperatorFault,
    PermanentProviderError,
    ProviderError,
    ProviderHttp,
    Submission,
    SubmissionUncertain,
    TaskState,
    TaskStatus,
    TransientProviderError,
    body_json,
    error_detail,
    parse_retry_after,
)

NAME = "fal"

# fal's raw queue statuses -> job states. COMPLETED needs a look at the result.
STATUS_MAP: dict[str, TaskState] = {
    "IN_QUEUE": TaskState.QUEUED,
    "IN_PROGRESS": TaskState.PROCESSING,
    "COMPLETED": TaskState.COMPLETED,
    # Not documented by fal, listed by a third-party schema: map by name.
    "FAILED": TaskState.FAILED,
    "CANCELED": TaskState.CANCELED,
    "CANCELLED": TaskState.CANCELED,
}

# Options of a job that fal's Kling image-to-video documents (the database accepts no others).
FORWARDED_OPTIONS = {"duration", "negative_prompt", "cfg_scale"}

# error_type values fal documents as content or input problems: the user's to fix.
MODERATION_HINTS = ("content_policy", "moderation", "nsfw", "safety")


# Input fields that carry the image, across fal's Kling versions.
IMAGE_FIELDS = frozenset({"image_url", "start_image_url"})


def image_refusal(response: httpx.Response) -> str | None:
    """The reason, when a 422's validation errors point at the image field.

    fal answers invalid input as FastAPI does: `{"detail": [{"loc": ["body",
    "image_url"], "msg": ..., "type": ...}]}`.
    """
    body = body_json(response)
    details = body.get("detail") if isinstance(body, dict) else None
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and IMAGE_FIELDS & {str(part) for part in item.get("loc") or []}:
            return str(item.get("msg") or "the image was refused")
    return None


# fal reports an account without credit, or locked by an admin, as a 403 (fal-ai/fal #1147).
CREDIT_HINTS = ("balance", "credit", "locked", "billing", "payment")


def operator_fault(response: httpx.Response, detail: str) -> OperatorFault | None:
    """401/403 (key, locked account), 402 (credits), 404 on a submit (no such model)."""
    status = response.status_code
    text = detail.lower()
    if status == 402 or (status == 403 and any(h in text for h in CREDIT_HINTS)):
        kind = "credits"
    elif status in (401, 403):
        kind = "credentials"
    elif status == 404 and response.request.method == "POST" and "/requests/" not in response.request.url.path:
        kind = "model"
    else:
        return None
    return OperatorFault(f"fal refused our account ({status}, {kind}): {detail}", kind=kind, status_code=status)


def classify_response(response: httpx.Response) -> ProviderError | None:
    """None for success, else the error a non-2xx response means."""
    if response.is_success:
        return None
    detail = error_detail(response)
    retryable = response.headers.get("x-fal-retryable", "").lower()
    error_type = response.headers.get("x-fal-error-type", "")
    if response.status_code == 504 and response.headers.get("x-fal-request-timeout-type") == "user":
        return PermanentProviderError(
            "fal did not start the request before its deadline", code="fal_start_timeout", status_code=504
        )
    if retryable == "true" or (retryable != "false" and response.status_code in TRANSIENT_HTTP):
        return TransientProviderError(
            f"fal answered {response.status_code}: {detail}",
            code=f"fal_{error_type or response.status_code}",
            status_code=response.status_code,
            retry_after=parse_retry_after(response),
        )
    if fault := operator_fault(response, detail):
        return fault
    if any(h in (detail + error_type).lower() for h in MODERATION_HINTS):
        return PermanentProviderError(
            "The image or prompt was rejected by the provider's content policy.",
            code="content_moderated",
            status_code=response.status_code,
        )
    if response.status_code == 422 and (reason := image_refusal(response)):
        return InputRefused(NAME, reason, status_code=422)
    return PermanentProviderError(
        f"fal refused the request ({response.status_code}): {detail}",
        code=f"fal_{response.status_code}",
        status_code=response.status_code,
    )


class FalProvider:
    """fal.ai through its queue API."""

    name = NAME

    def __init__(
        self,
        *,
        key: str,
        model: str,
        base_url: str = "https://queue.fal.run",
        poll_interval: float = 3.0,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = MAX_IN_FLIGHT,
    ):
        self.model = model.strip("/")
        self.base_url = base_url.rstrip("/")
        self.poll_interval = poll_interval
        self._http = ProviderHttp(
            NAME,
            classify_response,
            headers={"Authorization": f"Key {key}"},
            timeout=timeout,
            transport=transport,
            max_connections=max_connections,
        )

    def _app_base(self) -> str:
        # Status, result and cancel URLs use only owner/app, without the model's subpath.
        owner_app = "/".join(self.model.split("/")[:2])
        return f"{self.base_url}/{owner_app}/requests"

    async def submit(
        self, image_url: str, prompt: str | None, options: dict[str, Any], *, webhook_url: str | None = None
    ) -> Submission:
        body: dict[str, Any] = {"image_url": image_url, **{k: v for k, v in options.items() if k in FORWARDED_OPTIONS}}
        if "duration" in body:
            body["duration"] = str(body["duration"])  # fal's Kling takes "5" or "10"
        if prompt:
            body["prompt"] = prompt
        # fal POSTs the result to `fal_webhook` when the request finishes (signed; see webhooks/fal.py)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self._http.request(
            "POST", f"{self.base_url}/{self.model}", submit=True, json=body, params=params
        )
        data = response.json()
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            # accepted, so perhaps running and paid, but we cannot know it: an answer lost
            raise SubmissionUncertain("fal accepted the request without a request_id", code="fal_bad_response")
        return Submission(provider=NAME, task_id=request_id, raw_status=str(data.get("status") or "IN_QUEUE"))

    async def status(self, task_id: str) -> TaskStatus:
        response = await self._http.request("GET", f"{self._app_base()}/{task_id}/status")
        data = response.json()
        raw = str(data.get("status", ""))
        state = STATUS_MAP.get(raw)
        if state is None:
            # Unknown status: keep polling, but say so in the timeline.
            return TaskStatus(TaskState.PROCESSING, raw_status=raw or "UNKNOWN", details=data)
        if state is TaskState.FAILED:
            return TaskStatus(state, raw, error="The provider could not make this video.", error_code="fal_failed")
        if state is not TaskState.COMPLETED:
            position = data.get("queue_position")
            return TaskStatus(
                state,
                raw,
                details={"queue_position": position},
                queue_position=position if isinstance(position, int) and position >= 0 else None,
            )
        if data.get("error") or data.get("error_type"):
            return self._failed(raw, str(data.get("error") or ""), str(data.get("error_type") or ""))
        return await self._result(task_id, raw)

    def _failed(self, raw: str, error: str, error_type: str) -> TaskStatus:
        text = f"{error} {error_type}".lower()
        if any(h in text for h in MODERATION_HINTS) or "422" in text:
            return TaskStatus(
                TaskState.FAILED,
                raw,
                error="The image or prompt was rejected by the provider's content policy.",
                error_code="content_moderated",
            )
        return TaskStatus(
            TaskState.FAILED,
            raw,
            error="The provider could not make this video.",
            error_code=f"fal_{error_type or 'failed'}",
        )

    def from_delivery(self, body: dict[str, Any]) -> TaskStatus | None:
        """A finished request from fal's webhook body: {"status": "OK", "payload": {"video": ...}}
        or {"status": "ERROR", "error": ..., "payload": ...}. None when the body carries no result
        (`payload_error`: fal could not serialize it), so the result is fetched instead."""
        raw = "COMPLETED"
        if body.get("status") == "ERROR":
            payload = body.get("payload")
            detail = str(payload.get("detail", "")) if isinstance(payload, dict) else ""
            return self._failed(raw, f"{body.get('error') or ''} {detail}", str(body.get("error_type") or ""))
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return None
        return self._video_status(payload, raw)

    def _video_status(self, data: Any, raw: str) -> TaskStatus:
        """The status a finished request's output (result or webhook payload) means."""
        video = data.get("video") if isinstance(data, dict) else None
        if not isinstance(video, dict):
            video = {}
        url = video.get("url")
        if not isinstance(url, str) or not url:
            return TaskStatus(
                TaskState.FAILED, raw, error="The provider returned no video.", error_code="fal_no_output"
            )
        return TaskStatus(
            TaskState.COMPLETED,
            raw,
            output_url=url,
            details={"content_type": video.get("content_type"), "file_size": video.get("file_size")},
        )

    async def _result(self, task_id: str, raw: str) -> TaskStatus:
        try:
            response = await self._http.request("GET", f"{self._app_base()}/{task_id}")
        except PermanentProviderError as exc:
            # The result endpoint answering with an error means the request failed.
            return self._failed(raw, exc.message, exc.code)
        return self._video_status(response.json(), raw)

    async def check_credentials(self) -> str:
        """An authenticated call that costs nothing; raises OperatorFault for a refused key.

        fal documents no account or balance endpoint for queue keys. The cheapest
        authenticated call is the status of a request that does not exist: the key is
        checked first (401/403), then the id (404), and no task is created.
        """
        try:
            await self._http.request("GET", f"{self._app_base()}/{uuid.uuid4()}/status")
        except PermanentProviderError as exc:
            if exc.status_code == 404:
                return "fal accepted the key (status of a made-up request: 404, nothing billed)"
            raise
        return "fal accepted the key"

    async def cancel(self, task_id: str) -> None:
        # ALREADY_COMPLETED / NOT_FOUND: nothing left to stop.
        with contextlib.suppress(PermanentProviderError):
            await self._http.request("PUT", f"{self._app_base()}/{task_id}/cancel")

    async def aclose(self) -> None:
        await self._http.aclose()
