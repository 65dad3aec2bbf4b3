"""Runway's API (https://api.dev.runwayml.com): image_to_video tasks.

Written against Runway's documented HTTP API (https://docs.dev.runwayml.com):
`Authorization: Bearer <secret>` and the required `X-Runway-Version: 2024-11-06`;
POST /v1/image_to_video returns {"id"}; GET /v1/tasks/{id} answers PENDING,
THROTTLED, RUNNING, SUCCEEDED (with output URLs that expire in 24-48 h: fetch the
task again for fresh ones), FAILED (failure, failureCode) or CANCELLED; DELETE
/v1/tasks/{id} cancels. Runway asks for polls no more often than every 5 s.
"""

from __future__ import annotations

import contextlib
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

NAME = "runway"
API_VERSION = "2024-11-06"
MIN_POLL_INTERVAL = 5.0

STATUS_MAP: dict[str, TaskState] = {
    "PENDING": TaskState.QUEUED,
    "THROTTLED": TaskState.QUEUED,
    "RUNNING": TaskState.PROCESSING,
    "SUCCEEDED": TaskState.COMPLETED,
    "FAILED": TaskState.FAILED,
    "CANCELLED": TaskState.CANCELED,
}

# Options the worker forwards to Runway (camelCase on the wire).
FORWARDED_OPTIONS = {"ratio", "duration", "seed"}


def image_refusal(response: httpx.Response) -> str | None:
    """The reason, when a 400 is about `promptImage`.

    Runway's 400 body has an `error` text and, for invalid fields, `issues` with a
    `path` each (`["promptImage"]`).
    """
    body = body_json(response)
    if not isinstance(body, dict):
        return None
    for issue in body.get("issues") or []:
        if isinstance(issue, dict) and "promptImage" in [str(p) for p in issue.get("path") or []]:
            return str(issue.get("message") or body.get("error") or "the image was refused")
    error = body.get("error")
    return error if isinstance(error, str) and "promptImage" in error else None


def operator_fault(response: httpx.Response, detail: str) -> OperatorFault | None:
    """401/403 (key, permission), 402 or a 400 about credits, 404 on a submit (no such model)."""
    status = response.status_code
    if status == 402 or (status == 400 and "credit" in detail.lower()):
        kind = "credits"
    elif status in (401, 403):
        kind = "credentials"
    elif status == 404 and response.request.method == "POST":
        kind = "model"
    else:
        return None
    return OperatorFault(f"runway refused our account ({status}, {kind}): {detail}", kind=kind, status_code=status)


def classify_response(response: httpx.Response) -> ProviderError | None:
    if response.is_success:
        return None
    detail = error_detail(response)
    should_retry = response.headers.get("x-should-retry", "").lower()
    if should_retry == "true" or (should_retry != "false" and response.status_code in TRANSIENT_HTTP):
        return TransientProviderError(
            f"runway answered {response.status_code}: {detail}",
            code=f"runway_{response.status_code}",
            status_code=response.status_code,
            retry_after=parse_retry_after(response),
        )
    if fault := operator_fault(response, detail):
        return fault
    if response.status_code == 400 and (reason := image_refusal(response)):
        return InputRefused(NAME, reason, status_code=400)
    return PermanentProviderError(
        f"runway refused the request ({response.status_code}): {detail}",
        code=f"runway_{response.status_code}",
        status_code=response.status_code,
    )


def failure_message(code: str | None) -> str:
    """Runway says its `failure` text is not for users; ours is, by failure code."""
    code = code or ""
    if code.startswith(("SAFETY.", "INPUT_PREPROCESSING.SAFETY")):
        return "The image or prompt was rejected by the provider's content policy."
    if code.startswith("INTERNAL.BAD_OUTPUT"):
        return "The provider could not make a good video from this image; try another image or prompt."
    return "The provider could not make this video."


class RunwayProvider:
    """Runway image-to-video."""

    name = NAME

    def __init__(
        self,
        *,
        api_secret: str,
        model: str = "gen4_turbo",
        base_url: str = "https://api.dev.runwayml.com",
        poll_interval: float = 6.0,
        ratio: str = "1280:720",
        duration: int = 5,
        timeout: httpx.Timeout | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = MAX_IN_FLIGHT,
        enforce_min_interval: bool = True,
    ):
        self.model = model
        self.ratio = ratio
        self.duration = duration
        self.base_url = base_url.rstrip("/")
        self.poll_interval = max(poll_interval, MIN_POLL_INTERVAL) if enforce_min_interval else poll_interval
        self._http = ProviderHttp(
            NAME,
            classify_response,
            headers={"Authorization": f"Bearer {api_secret}", "X-Runway-Version": API_VERSION},
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            max_connections=max_connections,
        )

    async def submit(
        self, image_url: str, prompt: str | None, options: dict[str, Any], *, webhook_url: str | None = None
    ) -> Submission:
        """Start a task; Runway has no webhooks, so `webhook_url` is not sent."""
        body: dict[str, Any] = {
            "model": self.model,
            "promptImage": image_url,
            "ratio": self.ratio,
            "duration": self.duration,
        }
        body.update({k: v for k, v in options.items() if k in FORWARDED_OPTIONS})
        if "duration" in body:
            body["duration"] = int(body["duration"])  # Runway takes an integer
        if prompt:
            body["promptText"] = prompt[:1000]
        response = await self._http.request("POST", "/v1/image_to_video", submit=True, json=body)
        task_id = response.json().get("id")
        if not isinstance(task_id, str) or not task_id:
            # accepted, so perhaps running and paid, but we cannot know it: an answer lost
            raise SubmissionUncertain("runway accepted the task without an id", code="runway_bad_response")
        return Submission(provider=NAME, task_id=task_id, raw_status="PENDING")

    async def check_credentials(self) -> str:
        """Runway's organization endpoint: the key, the credit balance and the tier's limits.

        Raises OperatorFault for a refused key, or for an account without credits.
        """
        response = await self._http.request("GET", "/v1/organization")
        data = response.json()
        balance = data.get("creditBalance")
        if isinstance(balance, int | float) and balance <= 0:
            raise OperatorFault("runway: the account has no credits left", kind="credits", status_code=402)
        model = ((data.get("tier") or {}).get("models") or {}).get(self.model) or {}
        limits = ", ".join(f"{k} {v}" for k, v in sorted(model.items()))
        return f"{balance} credits" + (f"; {self.model}: {limits}" if limits else "")

    async def status(self, task_id: str) -> TaskStatus:
        response = await self._http.request("GET", f"/v1/tasks/{task_id}")
        data = response.json()
        raw = str(data.get("status", ""))
        state = STATUS_MAP.get(raw)
        if state is None:
            return TaskStatus(TaskState.PROCESSING, raw_status=raw or "UNKNOWN", details=data)
        if state is TaskState.COMPLETED:
            output = data.get("output") or []
            url = output[0] if output and isinstance(output[0], str) else None
            if not url:
                return TaskStatus(
                    TaskState.FAILED, raw, error="The provider returned no video.", error_code="runway_no_output"
                )
            return TaskStatus(state, raw, output_url=url)
        if state is TaskState.FAILED:
            code = data.get("failureCode")
            return TaskStatus(
                state,
                raw,
                error=failure_message(code),
                error_code="content_moderated" if "SAFETY" in str(code) else f"runway_{code or 'failed'}",
            )
        fraction = data.get("progress")
        progress = round(float(fraction) * 100) if isinstance(fraction, int | float) and 0 <= fraction <= 1 else None
        return TaskStatus(state, raw, details={"progress": fraction}, progress=progress)

    def from_delivery(self, body: dict[str, Any]) -> TaskStatus | None:
        """Runway sends no webhooks: its tasks are polled."""
        return None

    async def cancel(self, task_id: str) -> None:
        with contextlib.suppress(PermanentProviderError):  # already gone
            await self._http.request("DELETE", f"/v1/tasks/{task_id}", headers={"Accept": "*/*"})

    async def aclose(self) -> None:
        await self._http.aclose()
