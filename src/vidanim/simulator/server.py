"""The simulator server: fal.ai queue API and Runway API on one loopback port.

Routes (as fal's and Runway's API documentation give them):

    fal      POST /{owner}/{app}[/{subpath}]              submit  -> request_id + URLs
             GET  /{owner}/{app}/requests/{id}/status     202 IN_QUEUE|IN_PROGRESS, 200 COMPLETED
             GET  /{owner}/{app}/requests/{id}            result {"video": {"url", ...}}
             PUT  /{owner}/{app}/requests/{id}/cancel     {"status": "CANCELLATION_REQUESTED"}
    runway   POST /v1/image_to_video                      {"id"}
             GET  /v1/tasks/{id}                          PENDING|RUNNING|SUCCEEDED|FAILED|CANCELLED
             DELETE /v1/tasks/{id}                        204
             GET  /v1/organization                        {"creditBalance", "tier": {...}}
    files    GET  /files/{task}.mp4?expires=..&sig=..     the output video (403 once expired)

    fal      GET  /.well-known/jwks.json                  the key set its webhooks are signed with
    any      GET  /redirect?to=<url>                      302 to <url> (an open redirect, for the worker's checks)

A fal submission with `?fal_webhook=<url>` gets its result POSTed there, signed, when
the task finishes (simulator/webhooks.py: retries and delivery faults).

Faults are injected per route (`fail_next`, `hang_next`, `drop_reply_next`: the task
is created and paid, its answer never sent), per task (`outcome_next`: fail,
moderate), per output URL (`expire_urls_next`) and per webhook
(`webhooks.fault_next`); `latency` delays every answer. Counters record every
submission and cancel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vidanim.httpserver import QuietThreadingHTTPServer
from vidanim.simulator.media import mp4_chunks
from vidanim.simulator.webhooks import USER_ID as FAL_USER_ID
from vidanim.simulator.webhooks import WebhookDispatcher

ROUTES = (
    "fal.submit",
    "fal.status",
    "fal.result",
    "fal.cancel",
    "runway.submit",
    "runway.status",
    "runway.cancel",
    "runway.organization",
    "file",
)
FAL_REQUEST = re.compile(r"^/(?P<app>[^/]+/[^/]+)/requests/(?P<id>[^/]+)(?P<rest>/status|/cancel)?$")
RUNWAY_TASK = re.compile(r"^/v1/tasks/(?P<id>[^/]+)$")
FILE = re.compile(r"^/files/(?P<id>[^/]+)\.mp4$")
JWKS_PATH = "/.well-known/jwks.json"
REDIRECT_PATH = "/redirect"
# fal's answer for a moderated request: the result endpoint's 422 body, the webhook's payload
FAL_MODERATED = {
    "detail": [{"loc": ["body", "image_url"], "msg": "content policy violation", "type": "content_policy_violation"}]
}
WEBHOOK_JOB = re.compile(r"/webhooks/fal/(?P<job>[0-9a-f-]{36})(?:\?|$)")
URL_LIFETIME = 3600.0


@dataclass
class Fault:
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    hang: float = 0.0


@dataclass
class Task:
    provider: str
    id: str
    app: str
    body: dict[str, Any]
    created: float
    queue_seconds: float
    run_seconds: float
    outcome: str = "succeed"  # succeed | fail | moderate
    canceled: bool = False
    #: the phase the task was in when its first cancel arrived (None: never canceled)
    canceled_in: str | None = None
    polls: int = 0
    #: where fal delivers the result (the submission's `fal_webhook`)
    webhook_url: str | None = None

    @property
    def job_id(self) -> str | None:
        """The job a webhook URL names (vidanim's URLs end in /webhooks/fal/{job id})."""
        match = WEBHOOK_JOB.search(self.webhook_url or "")
        return match["job"] if match else None

    def progress(self, now: float) -> float:
        """Runway's `progress` while running: the share of the run done, in steps of a tenth."""
        done = (now - self.created - self.queue_seconds) / self.run_seconds if self.run_seconds else 1.0
        return round(min(max(done, 0.0), 0.9), 1)

    def queue_position(self, now: float) -> int:
        """fal's `queue_position` while queued: counts down to 0 as the queue time passes."""
        left = self.queue_seconds - (now - self.created)
        return max(int(left / 0.25), 0)

    @property
    def paid(self) -> bool:
        """Whether the account pays for it: a task is paid unless canceled before it ran."""
        return self.canceled_in != "queued"

    def cancel(self, now: float) -> None:
        if not self.canceled:
            self.canceled_in = self.phase(now)
        self.canceled = True

    def phase(self, now: float) -> str:
        if self.canceled:
            return "canceled"
        elapsed = now - self.created
        if elapsed < self.queue_seconds:
            return "queued"
        if elapsed < self.queue_seconds + self.run_seconds:
            return "running"
        return self.outcome


class Simulator:
    """Run with `with Simulator() as sim:`; `sim.base_url` serves both providers."""

    def __init__(
        self,
        *,
        fal_key: str = "sim-fal-key",
        runway_secret: str = "sim-runway-secret",  # noqa: S107 (the simulator's own key)
        host: str = "127.0.0.1",
        port: int = 0,
        queue_seconds: float = 0.05,
        run_seconds: float = 0.1,
        output_size: int = 64 * 1024,
        video_factory: Callable[[str], bytes] | None = None,
        fal_user_id: str = FAL_USER_ID,
    ):
        self.fal_key = fal_key
        self.runway_secret = runway_secret
        #: what Runway's organization endpoint reports as the account's credits
        self.runway_credit_balance = 10_000
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.output_size = output_size
        #: given the input image URL, returns the video bytes (the demo renders a real MP4)
        self.video_factory = video_factory
        self.latency = 0.0
        #: seconds a submission's answer takes after its task was created, per route
        self.submit_answer_delay: dict[str, float] = {}
        self._lock = threading.Lock()
        self._faults: dict[str, deque[Fault]] = {r: deque() for r in ROUTES}
        self._outcomes: dict[str, deque[str]] = {"fal": deque(), "runway": deque()}
        self._expire_urls = 0
        self._drop_replies: Counter[str] = Counter()
        #: fal's webhook deliveries: signing, retries, faults
        self.webhooks = WebhookDispatcher(user_id=fal_user_id)
        self._signing_key = secrets.token_bytes(32)
        # a video_factory's renders, started when the task is created (as a provider works
        # while the task runs), so a finished task's webhook goes out on time
        self._videos: dict[str, Future[bytes]] = {}
        self._renders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sim-render")
        self.tasks: dict[str, Task] = {}
        #: every accepted submission, in order: (provider, task id, request body)
        self.submissions: list[tuple[str, str, dict[str, Any]]] = []
        #: every cancel received: (provider, task id)
        self.cancels: list[tuple[str, str]] = []
        #: requests per route, faults included
        self.requests: Counter[str] = Counter()
        #: output bytes served
        self.bytes_served = 0
        self._server = QuietThreadingHTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="vidanim-simulator", daemon=True
        )
        self._thread.start()
        return self

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}{JWKS_PATH}"

    def stop(self) -> None:
        self.webhooks.stop()
        self._renders.shutdown(wait=False, cancel_futures=True)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # fault injection -------------------------------------------------------------
    def fail_next(
        self,
        route: str,
        count: int = 1,
        status: int = 503,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """The next `count` requests on `route` answer `status`."""
        assert route in ROUTES, route
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = f"{retry_after:g}"
        with self._lock:
            self._faults[route].extend(Fault(status, h, body) for _ in range(count))

    def clear_faults(self, route: str | None = None) -> None:
        """Drop the faults still waiting on `route` (every route when None): the outage is over."""
        with self._lock:
            for name in [route] if route else list(self._faults):
                self._faults[name].clear()

    def hang_next(self, route: str, count: int = 1, seconds: float = 30.0) -> None:
        """The next `count` requests on `route` get no answer for `seconds`."""
        with self._lock:
            self._faults[route].extend(Fault(status=0, hang=seconds) for _ in range(count))

    def drop_reply_next(self, route: str, count: int = 1) -> None:
        """The next `count` submissions on `route` start their (paid) task, then lose the answer:
        the connection closes without a response."""
        assert route in ("fal.submit", "runway.submit"), route
        with self._lock:
            self._drop_replies[route] += count

    def _answer_delay(self, route: str) -> None:
        delay = self.submit_answer_delay.get(route, 0.0)
        if delay:
            time.sleep(delay)

    def paid_tasks(self, provider: str | None = None) -> list[Task]:
        """Tasks the account pays for: every task not canceled before it ran."""
        with self._lock:
            return [t for t in self.tasks.values() if t.paid and provider in (None, t.provider)]

    def paid_tasks_for(self, job_id: object) -> list[Task]:
        """fal tasks started for a job (known by the job id in their webhook URL)."""
        with self._lock:
            return [t for t in self.tasks.values() if t.job_id == str(job_id)]

    def outcome_next(self, provider: str, outcome: str, count: int = 1) -> None:
        """The next `count` tasks of `provider` end `fail` or `moderate` instead of succeeding."""
        assert outcome in ("succeed", "fail", "moderate"), outcome
        with self._lock:
            self._outcomes[provider].extend([outcome] * count)

    def expire_urls_next(self, count: int = 1) -> None:
        """The next `count` output URLs handed out are already expired."""
        with self._lock:
            self._expire_urls += count

    def submissions_for(self, provider: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        with self._lock:
            return [s for s in self.submissions if provider is None or s[0] == provider]

    # internals -------------------------------------------------------------------
    def _take_fault(self, route: str) -> Fault | None:
        with self._lock:
            self.requests[route] += 1
            return self._faults[route].popleft() if self._faults[route] else None

    def _new_task(self, provider: str, app: str, body: dict[str, Any], webhook_url: str | None = None) -> Task:
        with self._lock:
            outcome = self._outcomes[provider].popleft() if self._outcomes[provider] else "succeed"
            task = Task(
                provider, str(uuid.uuid4()), app, body, time.monotonic(), self.queue_seconds, self.run_seconds, outcome
            )
            task.webhook_url = webhook_url
            self.tasks[task.id] = task
            self.submissions.append((provider, task.id, body))
        if self.video_factory is not None:
            self._render(task)
        if webhook_url:
            self.webhooks.schedule(
                task.id,
                webhook_url,
                lambda: self._webhook_body(task),
                task.created + task.queue_seconds + task.run_seconds,
            )
        return task

    def _take_drop_reply(self, route: str) -> bool:
        with self._lock:
            if self._drop_replies[route] > 0:
                self._drop_replies[route] -= 1
                return True
            return False

    def _fal_output(self, task: Task) -> dict[str, Any]:
        """A finished fal request's output, as its result endpoint and its webhook both give it."""
        size = len(self._video(task)) if self.video_factory else self.output_size  # type: ignore[arg-type]
        video = {
            "url": self._output_url(task),
            "content_type": "video/mp4",
            "file_name": "output.mp4",
            "file_size": size,
        }
        return {"video": video}

    def _webhook_body(self, task: Task) -> dict[str, Any]:
        """What fal POSTs when a request finishes (docs.fal.ai, model-endpoints/webhooks)."""
        head = {"request_id": task.id, "gateway_request_id": task.id}
        phase = task.phase(time.monotonic())
        if phase == "succeed":
            return {**head, "status": "OK", "payload": self._fal_output(task)}
        if phase == "moderate":
            return {**head, "status": "ERROR", "error": "Invalid status code: 422", "payload": FAL_MODERATED}
        if phase == "canceled":
            return {**head, "status": "ERROR", "error": "Request was cancelled", "payload": None}
        return {**head, "status": "ERROR", "error": "Invalid status code: 500", "payload": {"detail": "Runner failed"}}

    def _output_url(self, task: Task) -> str:
        with self._lock:
            expired = self._expire_urls > 0
            self._expire_urls -= int(expired)
        expires = int(time.time() + (-60 if expired else URL_LIFETIME))
        sig = hmac.new(self._signing_key, f"{task.id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{self.base_url}/files/{task.id}.mp4?expires={expires}&sig={sig}"

    def _url_valid(self, task_id: str, query: dict[str, list[str]]) -> bool:
        try:
            expires = int(query["expires"][0])
            sig = query["sig"][0]
        except (KeyError, ValueError, IndexError):
            return False
        good = hmac.new(self._signing_key, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(sig, good) and expires > time.time()

    def _render(self, task: Task) -> Future[bytes]:
        """The task's video from the video_factory, rendered once, in the background."""
        assert self.video_factory is not None
        with self._lock:
            future = self._videos.get(task.id)
            if future is None:
                image_url = str(task.body.get("image_url") or task.body.get("promptImage") or "")
                future = self._videos[task.id] = self._renders.submit(self.video_factory, image_url)
        return future

    def _video(self, task: Task) -> Iterator[bytes] | bytes:
        if self.video_factory is None:
            return mp4_chunks(self.output_size)
        return self._render(task).result()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            # plumbing
            def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    value = json.loads(raw or b"{}")
                except ValueError:
                    return {}
                return value if isinstance(value, dict) else {}

            def _fault(self, route: str) -> bool:
                if sim.latency:
                    time.sleep(sim.latency)
                fault = sim._take_fault(route)
                if fault is None:
                    return False
                if fault.hang:
                    time.sleep(fault.hang)
                    self.close_connection = True
                    return True
                self._json(fault.status, fault.body or {"detail": f"simulated {fault.status}"}, fault.headers)
                return True

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                path = url.path
                if path == JWKS_PATH and method == "GET":
                    return self._json(200, sim.webhooks.jwks())
                if path == REDIRECT_PATH and method == "GET":
                    # an open redirect, as many CDNs and link shorteners have: the worker must not trust it
                    with sim._lock:
                        sim.requests["redirect"] += 1
                    target = (parse_qs(url.query).get("to") or [""])[0]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if path.startswith("/files/"):
                    return self._file(path, parse_qs(url.query)) if method == "GET" else self._json(405, None)
                if path.startswith("/v1/"):
                    return self._runway(method, path)
                return self._fal(method, path, parse_qs(url.query))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            # fal
            def _fal(self, method: str, path: str, query: dict[str, list[str]]) -> None:
                match = FAL_REQUEST.match(path)
                route = (
                    "fal.status"
                    if match and match["rest"] == "/status"
                    else "fal.cancel"
                    if match and match["rest"] == "/cancel"
                    else "fal.result"
                    if match
                    else "fal.submit"
                )
                body = self._body() if method in ("POST", "PUT") else {}
                if self.headers.get("Authorization") != f"Key {sim.fal_key}":
                    return self._json(401, {"detail": "No user found for Key ID and Secret"})
                if self._fault(route):
                    return None
                if route == "fal.submit":
                    if method != "POST" or not body.get("image_url"):
                        return self._json(
                            422,
                            {
                                "detail": [
                                    {
                                        "loc": ["body", "image_url"],
                                        "msg": "field required",
                                        "type": "value_error.missing",
                                    }
                                ]
                            },
                        )
                    app = "/".join(path.strip("/").split("/")[:2])
                    hooks = query.get("fal_webhook") or []
                    task = sim._new_task("fal", app, body, hooks[0] if hooks else None)
                    if sim._take_drop_reply("fal.submit"):
                        self.close_connection = True
                        return None
                    sim._answer_delay("fal.submit")
                    base = f"{sim.base_url}/{app}/requests/{task.id}"
                    return self._json(
                        200,
                        {
                            "request_id": task.id,
                            "status": "IN_QUEUE",
                            "queue_position": 0,
                            "response_url": base,
                            "status_url": f"{base}/status",
                            "cancel_url": f"{base}/cancel",
                        },
                    )
                assert match is not None
                found = sim.tasks.get(match["id"])
                if found is None or found.provider != "fal":
                    return self._json(404, {"detail": "Request not found"})
                task = found
                phase = task.phase(time.monotonic())
                if route == "fal.cancel":
                    with sim._lock:
                        sim.cancels.append(("fal", task.id))
                    if phase in ("queued", "running"):
                        task.cancel(time.monotonic())
                        return self._json(202, {"status": "CANCELLATION_REQUESTED"})
                    return self._json(400, {"status": "ALREADY_COMPLETED"})
                if route == "fal.status":
                    task.polls += 1
                    if phase == "queued":
                        return self._json(
                            202, {"status": "IN_QUEUE", "queue_position": task.queue_position(time.monotonic())}
                        )
                    if phase == "running":
                        return self._json(202, {"status": "IN_PROGRESS", "logs": []})
                    if phase == "succeed":
                        return self._json(200, {"status": "COMPLETED", "metrics": {"inference_time": 1.0}})
                    if phase == "moderate":
                        return self._json(
                            200,
                            {
                                "status": "COMPLETED",
                                "error": "Invalid status code: 422",
                                "error_type": "content_policy_violation",
                            },
                        )
                    if phase == "canceled":
                        return self._json(
                            200,
                            {"status": "COMPLETED", "error": "Request was cancelled", "error_type": "client_cancelled"},
                        )
                    return self._json(
                        200, {"status": "COMPLETED", "error": "Runner failed", "error_type": "runner_server_error"}
                    )
                # result
                if phase in ("queued", "running"):
                    return self._json(400, {"detail": "Request is still in progress"})
                if phase == "moderate":
                    return self._json(422, FAL_MODERATED)
                if phase != "succeed":
                    return self._json(
                        500,
                        {"detail": "Runner failed", "error_type": "runner_server_error"},
                        {"X-Fal-Retryable": "false"},
                    )
                return self._json(200, sim._fal_output(task))

            # runway
            def _runway(self, method: str, path: str) -> None:
                match = RUNWAY_TASK.match(path)
                if path == "/v1/image_to_video" and method == "POST":
                    route = "runway.submit"
                elif match and method == "GET":
                    route = "runway.status"
                elif match and method == "DELETE":
                    route = "runway.cancel"
                elif path == "/v1/organization" and method == "GET":
                    route = "runway.organization"
                else:
                    return self._json(404, {"error": "Not found"})
                body = self._body() if method == "POST" else {}
                if self.headers.get("Authorization") != f"Bearer {sim.runway_secret}":
                    return self._json(401, {"error": "Invalid API key"})
                if self.headers.get("X-Runway-Version") != "2024-11-06":
                    return self._json(400, {"error": "X-Runway-Version header is required"})
                if self._fault(route):
                    return None
                if route == "runway.organization":
                    return self._json(
                        200,
                        {
                            "creditBalance": sim.runway_credit_balance,
                            "tier": {
                                "maxMonthlyCreditSpend": 100000,
                                "models": {"gen4_turbo": {"maxConcurrentGenerations": 5, "maxDailyGenerations": 500}},
                            },
                        },
                    )
                if route == "runway.submit":
                    if not body.get("promptImage") or not body.get("model"):
                        return self._json(400, {"error": "promptImage and model are required"})
                    task = sim._new_task("runway", "runway", body)
                    if sim._take_drop_reply("runway.submit"):
                        self.close_connection = True
                        return None
                    sim._answer_delay("runway.submit")
                    return self._json(200, {"id": task.id})
                assert match is not None
                found = sim.tasks.get(match["id"])
                if found is None or found.provider != "runway":
                    return self._json(404, {"error": "Task not found"})
                task = found
                phase = task.phase(time.monotonic())
                if route == "runway.cancel":
                    with sim._lock:
                        sim.cancels.append(("runway", task.id))
                    task.cancel(time.monotonic())
                    return self._json(204, None)
                task.polls += 1
                created = {"id": task.id, "createdAt": "2026-11-25T00:00:00Z"}
                if phase == "queued":
                    return self._json(200, {**created, "status": "PENDING"})
                if phase == "running":
                    return self._json(
                        200, {**created, "status": "RUNNING", "progress": task.progress(time.monotonic())}
                    )
                if phase == "succeed":
                    return self._json(200, {**created, "status": "SUCCEEDED", "output": [sim._output_url(task)]})
                if phase == "canceled":
                    return self._json(200, {**created, "status": "CANCELLED"})
                code = "SAFETY.INPUT.IMAGE" if phase == "moderate" else "INTERNAL.BAD_OUTPUT.CODE01"
                return self._json(200, {**created, "status": "FAILED", "failure": "internal text", "failureCode": code})

            # files
            def _file(self, path: str, query: dict[str, list[str]]) -> None:
                if self._fault("file"):
                    return None
                match = FILE.match(path)
                task = sim.tasks.get(match["id"]) if match else None
                if task is None or not sim._url_valid(task.id, query):
                    return self._json(403, {"error": "Request has expired or signature is invalid"})
                video = sim._video(task)
                if isinstance(video, bytes):
                    total, chunks = len(video), iter([video])
                else:
                    total, chunks = sim.output_size, video
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(total))
                self.end_headers()
                try:
                    for chunk in chunks:
                        self.wfile.write(chunk)
                        with sim._lock:
                            sim.bytes_served += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler
