"""fal webhooks end to end: the worker's endpoint, the simulator's signed deliveries and their faults.

The worker serves /webhooks/fal/{job} on loopback and names that URL in each fal
submission; the simulator POSTs each finished request there, signed with its own
key (JWKS served by the simulator), and retries until answered 2xx. The fallback
poll is set to 30 s unless a test says otherwise, so a job that completes within a
test's time completed through its webhook.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.grant_modes import service_role_scenario
from tests.support.postgrest import as_user
from tests.worker.conftest import running
from tests.worker.test_crashes import WORKER_SCRIPT, DiesAfterUpload, ProcessDied
from vidanim.ports import free_port
from vidanim.webhooks.fal import (
    HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_USER_ID,
    MAX_BODY_BYTES,
    new_token,
    sign,
    token_hash,
)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def hooked(settings_for, sim, port):
    """Settings of a worker that takes fal's webhooks on `port` (fal only unless told)."""

    def build(**overrides: Any):
        values: dict[str, Any] = {
            "providers": "fal",
            "http_port": port,
            "operator_port": 0,
            "webhook_public_url": f"http://127.0.0.1:{port}",
            "fal_webhook_jwks_urls": sim.jwks_url,
            "fal_webhook_poll_seconds": 30.0,
            "uncertain_submission_wait_seconds": 30.0,
            "fal_webhook_user_id": sim.webhooks.user_id,
        }
        return settings_for(**(values | overrides))

    return build


async def run_until(app, predicate, seconds: float = 15.0) -> None:
    """Run the worker until `predicate()` holds (then stop it), failing after `seconds`."""
    runner = asyncio.create_task(app.worker.run(install_signals=False))
    try:
        deadline = time.monotonic() + seconds
        while not predicate():
            assert not runner.done(), "the worker stopped"
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)
    finally:
        app.worker.stop()
        await asyncio.wait_for(runner, 10)


def status_of(users, job_id) -> str:
    return str(users.job(job_id)["status"])


def token_for(db, job_id, *, provider: str = "fal", seconds: float = 600.0) -> str:
    """A URL token as a submission's would be, put in place as the table's owner (test setup)."""
    token = new_token()
    with db.connect() as conn:
        conn.execute(
            "insert into vidanim_private.video_webhook_tokens (token_hash, job_id, provider, expires_at)"
            " values (%s, %s, %s, now() + make_interval(secs => %s))",
            (token_hash(token), job_id, provider, seconds),
        )
    return token


def hook_url(app, job_id, token: str) -> str:
    return f"{app.http_url}/webhooks/fal/{job_id}?token={token}"


def stored_deliveries(db, job_id) -> list[tuple[str, str, int]]:
    with db.connect() as conn:
        return conn.execute(
            "select request_id, outcome, deliveries from vidanim_private.video_provider_deliveries"
            " where job_id = %s order by first_received_at",
            (job_id,),
        ).fetchall()


async def signed_post(
    sim,
    url: str,
    request_id: str,
    body: dict[str, Any] | bytes,
    *,
    key=None,
    at: float | None = None,
    user_id: str = "sim-fal-user",
    **kw: Any,
) -> httpx.Response:
    """POST a delivery signed as fal signs (the worker's server runs in this event loop: async);
    `user_id` is the fal account fal signs it for."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": "application/json",
        HEADER_REQUEST_ID: request_id,
        HEADER_USER_ID: user_id,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(key or sim.webhooks.key, request_id, user_id, timestamp, raw),
    }
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(url, content=raw, headers=headers | kw.pop("headers", {}), **kw)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def test_a_fal_job_completes_through_its_webhook_without_a_single_poll(users, hooked, sim, db, events):
    sim.queue_seconds, sim.run_seconds = 0.2, 0.3
    user, path = users.user_with_image()
    job = users.request(user, path)
    settings = hooked()
    async with running(settings) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    (task,) = sim.paid_tasks_for(job["id"])
    assert task.webhook_url.startswith(f"{settings.webhook_public_url}/webhooks/fal/{job['id']}?token=")
    assert task.webhook_url.startswith(f"{app.http_url}/webhooks/fal/{job['id']}?token=")
    assert (sim.requests["fal.status"], sim.requests["fal.result"]) == (0, 0), "no poll, no result fetch"
    assert [a.status for a in sim.webhooks.attempts_for(task.id)] == [200]
    assert stored_deliveries(db, job["id"]) == [(task.id, "recorded", 1)]
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    assert [e["state"] for e in events("webhook.used")] == ["completed"]
    row = users.job(job["id"])
    assert (row["provider_submissions"], row["uncertain_submissions"]) == (1, 0)


async def test_a_lost_webhook_delays_the_job_and_the_fallback_poll_completes_it(users, hooked, sim, db):
    sim.webhooks.fault_next("drop")
    user, path = users.user_with_image()
    job = users.request(user, path)
    started = time.monotonic()
    async with running(hooked(fal_webhook_poll_seconds=1.0)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert time.monotonic() - started >= 1.0, "nothing came before the fallback poll"
    assert sim.requests["fal.status"] >= 1
    assert sim.webhooks.answers == [], "the delivery was dropped"
    assert stored_deliveries(db, job["id"]) == []
    assert len(sim.paid_tasks_for(job["id"])) == 1


async def test_a_duplicated_webhook_completes_the_job_once(users, hooked, sim, db, events):
    sim.webhooks.fault_next("duplicate")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed" and len(sim.webhooks.answers) == 2)
    (task,) = sim.paid_tasks_for(job["id"])
    assert [a.status for a in sim.webhooks.answers] == [200, 200]
    assert stored_deliveries(db, job["id"]) == [(task.id, "recorded", 2)]
    assert len(events("upload.completed")) == 1
    assert [s for s, _ in users.timeline(job["id"])].count("completed") == 1


async def test_a_delayed_webhook_is_waited_for(users, hooked, sim):
    sim.webhooks.fault_next("delay", seconds=1.0)
    user, path = users.user_with_image()
    job = users.request(user, path)
    started = time.monotonic()
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert time.monotonic() - started >= 1.0
    assert sim.requests["fal.status"] == 0


async def test_webhooks_out_of_order_complete_each_job(users, hooked, sim):
    sim.webhooks.fault_next("reorder", seconds=5.0)
    first_user, first_path = users.user_with_image()
    second_user, second_path = users.user_with_image()
    first = users.request(first_user, first_path)
    async with running(hooked()) as app:
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        while not sim.paid_tasks_for(first["id"]):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        second = users.request(second_user, second_path)
        while {status_of(users, first["id"]), status_of(users, second["id"])} != {"completed"}:
            assert not runner.done()
            await asyncio.sleep(0.02)
        app.worker.stop()
        await runner
    order = [a.request_id for a in sim.webhooks.answers]
    (first_task,) = sim.paid_tasks_for(first["id"])
    (second_task,) = sim.paid_tasks_for(second["id"])
    assert order == [second_task.id, first_task.id], "the first job's delivery came last"
    assert sim.requests["fal.status"] == 0


async def test_a_badly_signed_delivery_is_refused_and_the_genuine_retry_accepted(users, hooked, sim, db):
    sim.webhooks.fault_next("bad_signature")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
        scrape = (await get(f"{app.operator_url}/metrics")).text
    assert [(a.status, a.bad_signature) for a in sim.webhooks.answers] == [(401, True), (200, False)]
    assert [d[1:] for d in stored_deliveries(db, job["id"])] == [("recorded", 1)], "the forged one left no trace"
    assert 'vidanim_webhook_deliveries_total{outcome="refused_401",provider="fal"} 1.0' in scrape
    assert 'vidanim_webhook_deliveries_total{outcome="recorded",provider="fal"} 1.0' in scrape


async def test_a_delivery_after_the_user_canceled_is_a_no_op(users, hooked, sim, db):
    sim.queue_seconds, sim.run_seconds = 0.3, 1.5
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(worker_lease_seconds=2)) as app:  # renewals (every 0.4 s) learn of the cancel
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        while not sim.paid_tasks_for(job["id"]) or status_of(users, job["id"]) != "processing":
            await asyncio.sleep(0.01)
        with users.db.connect() as conn, as_user(conn, user) as cur:
            cur.execute("select public.cancel_video_job(%s)", (job["id"],))
        (task,) = sim.paid_tasks_for(job["id"])
        while not sim.webhooks.attempts_for(task.id):
            await asyncio.sleep(0.02)
        app.worker.stop()
        await runner
    assert ("fal", task.id) in sim.cancels, "the worker stopped the task"
    assert [a.status for a in sim.webhooks.attempts_for(task.id)] == [200]
    assert stored_deliveries(db, job["id"]) == [(task.id, "ended", 1)]
    assert status_of(users, job["id"]) == "canceled"
    assert users.output_objects() == []


async def test_late_deliveries_for_a_completed_job_are_duplicates_or_canceled_orphans(users, hooked, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    settings = hooked()
    async with running(settings) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
        (task,) = sim.paid_tasks_for(job["id"])
        again = await signed_post(
            sim, task.webhook_url, task.id, {"request_id": task.id, "status": "OK", "payload": {}}
        )
        # a request at fal that this job never recorded (as a lost submission's would be), with its own token
        stray = (await app.providers["fal"].submit("https://example.test/cat.png", None, {})).task_id
        stray_url = hook_url(app, job["id"], token_for(db, job["id"]))
        orphan = await signed_post(sim, stray_url, stray, {"request_id": stray, "status": "OK", "payload": {}})
        for _ in range(100):
            if ("fal", stray) in sim.cancels:
                break
            await asyncio.sleep(0.02)
    assert (again.status_code, again.json()) == (200, {"outcome": "duplicate"})
    assert (orphan.status_code, orphan.json()) == (200, {"outcome": "orphan"})
    assert ("fal", stray) in sim.cancels, "the worker asked fal to stop the request no job holds"
    assert status_of(users, job["id"]) == "completed"
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]


async def test_the_endpoint_refuses_what_fal_did_not_send_and_records_none_of_it(users, hooked, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    settings = hooked()
    async with running(settings) as app:
        url = hook_url(app, job["id"], token_for(db, job["id"]))
        body = {"request_id": "req-1", "status": "OK", "payload": {}}
        raw = json.dumps(body).encode()
        async with httpx.AsyncClient(timeout=5) as client:
            unsigned = await client.post(url, content=raw)
        forged = await signed_post(sim, url, "req-1", body, key=Ed25519PrivateKey.generate())
        # well past the edge: the header holds whole seconds, so +301 can truncate to +300.x
        stale = await signed_post(sim, url, "req-1", body, at=time.time() - 310)
        future = await signed_post(sim, url, "req-1", body, at=time.time() + 310)
        tampered = await signed_post(sim, url, "req-1", body, headers={HEADER_REQUEST_ID: "req-2"})
        shapeless = await signed_post(sim, url, "req-1", {"request_id": "req-1", "state": "done"})
        huge = await signed_post(
            sim, url, "req-1", {"request_id": "req-1", "status": "OK", "pad": "x" * MAX_BODY_BYTES}
        )
        not_a_job = await signed_post(sim, f"{app.http_url}/webhooks/fal/not-a-uuid", "req-1", body)
        wrong_method = await get(url)
        refused = [unsigned, forged, stale, future, tampered, shapeless, huge, not_a_job, wrong_method]
        scrape = (await get(f"{app.operator_url}/metrics")).text
    assert [r.status_code for r in refused] == [401, 401, 401, 401, 401, 400, 413, 404, 405]
    assert "token" not in unsigned.json()["error"], "the URL was vidanim's: the signature is what failed"
    assert "missing" in unsigned.json()["error"]
    assert "stale" in stale.json()["error"]
    assert "does not verify" in forged.json()["error"]
    assert "status" in shapeless.json()["error"]
    assert stored_deliveries(db, job["id"]) == []
    assert users.job(job["id"])["status"] == "queued", "nothing reached the job"
    assert 'vidanim_webhook_deliveries_total{outcome="refused_401",provider="fal"} 5.0' in scrape
    assert 'vidanim_webhook_deliveries_total{outcome="refused_400",provider="fal"} 1.0' in scrape
    assert 'vidanim_webhook_deliveries_total{outcome="refused_413",provider="fal"} 1.0' in scrape


async def test_a_database_outage_answers_503_so_fal_delivers_again(users, hooked, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app:
        real = app.worker.db.record_tokened_delivery
        calls = 0

        async def down_once(*args: Any) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise psycopg.OperationalError("the database went away")
            return await real(*args)

        app.worker.db.record_tokened_delivery = down_once  # type: ignore[method-assign]
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert [a.status for a in sim.webhooks.answers] == [503, 200]
    assert len(sim.paid_tasks_for(job["id"])) == 1


async def test_runway_is_still_polled_when_webhooks_are_on(users, hooked, sim):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(providers="runway")) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert sim.requests["runway.status"] >= 1
    assert sim.webhooks.answers == []
    assert all("fal_webhook" not in str(body) for _, _, body in sim.submissions)


# ambiguous submissions --------------------------------------------------------------------
async def test_a_lost_answer_waits_and_the_orphans_webhook_is_adopted(users, hooked, sim, db, events):
    sim.drop_reply_next("fal.submit")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    (task,) = sim.paid_tasks_for(job["id"])
    row = users.job(job["id"])
    assert row["provider_task_id"] == task.id
    assert (row["provider_submissions"], row["uncertain_submissions"]) == (1, 1)
    assert ("queued", "submission_uncertain") in users.timeline(job["id"])
    assert ("processing", "ADOPTED") in users.timeline(job["id"])
    assert stored_deliveries(db, job["id"]) == [(task.id, "adopted", 1)]
    assert len(events("provider.submission_uncertain")) == 1
    assert sim.cancels == []
    assert users.usage(user) == 1


async def test_after_the_wait_one_more_submission_and_the_late_orphan_is_canceled(users, hooked, sim, db, events):
    sim.drop_reply_next("fal.submit")
    sim.webhooks.fault_next("delay", seconds=4.0)  # the lost submission's delivery comes late
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(uncertain_submission_wait_seconds=0.3)) as app:
        await run_until(
            app, lambda: status_of(users, job["id"]) == "completed" and len(stored_deliveries(db, job["id"])) == 2
        )
        lost, kept = sorted(sim.paid_tasks_for(job["id"]), key=lambda t: t.created)
        for _ in range(100):
            if ("fal", lost.id) in sim.cancels:
                break
            await asyncio.sleep(0.02)
    row = users.job(job["id"])
    assert row["provider_task_id"] == kept.id
    assert (row["provider_submissions"], row["uncertain_submissions"]) == (2, 1)
    assert stored_deliveries(db, job["id"]) == [(kept.id, "recorded", 1), (lost.id, "orphan", 1)]
    assert ("fal", lost.id) in sim.cancels
    assert len(events("provider.submitting_again")) == 1


@pytest.mark.parametrize("provider", ["fal", "runway"])
async def test_without_webhooks_a_lost_answer_costs_at_most_one_more_submission(
    users, settings_for, sim, events, provider
):
    sim.drop_reply_next(f"{provider}.submit")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers=provider)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert len(sim.submissions_for(provider)) == 2, "the lost one and exactly one more"
    row = users.job(job["id"])
    assert (row["provider_submissions"], row["uncertain_submissions"]) == (2, 1)
    assert len(events("provider.submitting_again")) == 1


@pytest.mark.parametrize("provider", ["fal", "runway"])
async def test_without_webhooks_a_second_lost_answer_ends_the_job_unpaid_and_never_submits_a_third(
    users, settings_for, sim, provider
):
    sim.drop_reply_next(f"{provider}.submit", count=5)
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers=provider)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "failed")
    assert len(sim.submissions_for(provider)) == 2
    row = users.job(job["id"])
    assert (row["error_code"], row["provider_submissions"], row["uncertain_submissions"]) == (
        "submission_uncertain",
        2,
        2,
    )
    assert "not be charged" in row["error_message"]
    assert users.usage(user) == 0, "refunded"


async def test_with_webhooks_a_second_lost_answer_waits_for_either_task_until_the_deadline(users, hooked, sim, db):
    sim.drop_reply_next("fal.submit", count=2)
    sim.webhooks.fault_next("drop", count=2)  # neither orphan ever reports
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(uncertain_submission_wait_seconds=0.2, job_deadline_seconds=2)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "failed")
    assert len(sim.paid_tasks_for(job["id"])) == 2
    row = users.job(job["id"])
    assert (row["error_code"], row["uncertain_submissions"]) == ("submission_uncertain", 2)
    assert users.usage(user) == 0


# a worker killed between a webhook's receipt and the job's completion ------------------------
def start_hooked_process(db, sim, storage_dir, log, port: int) -> subprocess.Popen[bytes]:
    """A real worker process taking webhooks on `port` (lease 2 s), as `vidanim worker` runs."""
    env = os.environ | {
        "VIDANIM_PROVIDERS": "fal",
        "VIDANIM_HTTP_PORT": str(port),
        "VIDANIM_WEBHOOK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VIDANIM_FAL_WEBHOOK_JWKS_URLS": sim.jwks_url,
        "VIDANIM_FAL_WEBHOOK_POLL_SECONDS": "30",
        "VIDANIM_FAL_WEBHOOK_USER_ID": sim.webhooks.user_id,
    }
    args = [db.dsn, sim.fal_key, sim.runway_secret, sim.base_url, str(storage_dir), "doomed-worker", "2"]
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, *args],
            cwd=os.getcwd(),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )


async def wait_for(predicate, proc, log, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the worker process never got there: {log.read_text()}")
        await asyncio.sleep(0.02)


def kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)


@pytest.mark.slow
async def test_sigkill_while_the_delivery_is_being_recorded_loses_nothing(
    users, db, hooked, sim, storage_dir, tmp_path, port
):
    sim.run_seconds = 0.5
    user, path = users.user_with_image()
    job = users.request(user, path)
    log = tmp_path / "worker.log"
    proc = start_hooked_process(db, sim, storage_dir, log, port)
    try:
        await wait_for(lambda: users.job(job["id"])["status"] == "processing", proc, log)
        with psycopg.connect(db.dsn) as locker:
            # the job's row is locked: the endpoint's record waits inside the database ...
            locker.execute("select 1 from public.video_jobs where id = %s for update", (job["id"],))
            await wait_for(lambda: recording_waits(db), proc, log)
            kill(proc)  # ... when the process dies: fal's delivery gets no answer
            locker.rollback()
    finally:
        if proc.poll() is None:
            proc.kill()
    await asyncio.sleep(2.1)  # the dead worker's lease runs out
    (task,) = sim.paid_tasks_for(job["id"])
    async with running(hooked()) as app:  # the same public URL, served by a new worker
        await run_until(
            app,
            lambda: (
                status_of(users, job["id"]) == "completed"
                and any(a.status == 200 for a in sim.webhooks.attempts_for(task.id))
            ),
            seconds=30,
        )
    answers = [a.status for a in sim.webhooks.attempts_for(task.id)]
    assert answers[0] == 0, "the killed worker never answered"
    assert answers[-1] == 200, "fal delivered again until a worker answered"
    # the database ran the record the dead worker had sent, or the new worker recorded it
    assert [d[1] for d in stored_deliveries(db, job["id"])] == ["recorded"]
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    assert sim.cancels == []
    assert users.usage(user) == 1


def recording_waits(db) -> bool:
    with db.connect() as conn:
        (n,) = conn.execute(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
            " and query like '%record_video_provider_delivery%'"
        ).fetchone()
    return bool(n)


@pytest.mark.slow
async def test_sigkill_while_fetching_the_delivered_video_loses_nothing_and_pays_once(
    users, db, hooked, sim, storage_dir, tmp_path, port
):
    sim.hang_next("file", seconds=20)  # the first download of the video stalls
    user, path = users.user_with_image()
    job = users.request(user, path)
    log = tmp_path / "worker.log"
    proc = start_hooked_process(db, sim, storage_dir, log, port)
    try:
        await wait_for(lambda: bool(stored_deliveries(db, job["id"])) and sim.requests["file"] >= 1, proc, log)
        kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert users.job(job["id"])["status"] == "processing"
    await asyncio.sleep(2.1)
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed", seconds=30)
    (task,) = sim.paid_tasks_for(job["id"])
    assert stored_deliveries(db, job["id"]) == [(task.id, "recorded", 1)]
    assert sim.requests["fal.status"] == 0, "the new worker read the recorded delivery, it did not poll"
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    assert sim.cancels == []


async def test_a_crash_after_storing_the_delivered_video_completes_without_another_upload(users, hooked, sim, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(worker_lease_seconds=2)) as app:
        dying = DiesAfterUpload(app.storage)
        app.worker.pipeline.storage = dying
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        with pytest.raises(ProcessDied):
            await asyncio.wait_for(runner, 15)
    assert dying.uploads == 1
    await asyncio.sleep(2.1)
    async with running(hooked()) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert [e["reason"] for e in events("upload.skipped")] == ["already stored"]
    assert len(sim.paid_tasks_for(job["id"])) == 1
    assert sim.requests["fal.status"] == 0


async def test_a_delivery_received_by_another_worker_wakes_the_worker_holding_the_job(
    users, hooked, sim, db, port, events
):
    """The public URL reaches worker B; worker A holds the job: the NOTIFY carries the news."""
    user, path = users.user_with_image()
    job = users.request(user, path)
    holder = hooked(http_port=free_port(), worker_id="holder")  # its own server is not the public one
    receiver = hooked(worker_id="receiver")  # serves the public URL, runs no jobs
    async with running(receiver), running(holder) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert users.job(job["id"])["locked_by"] is None
    assert [e["worker_id"] for e in events("job.completed")] == ["holder"]
    assert sim.requests["fal.status"] == 0, "woken by the NOTIFY, not by a poll"
    (task,) = sim.paid_tasks_for(job["id"])
    assert stored_deliveries(db, job["id"]) == [(task.id, "recorded", 1)]


# an attacker with a fal account of their own, or a captured delivery -------------------------
async def test_a_delivery_fal_signed_for_someone_elses_request_cannot_reach_a_job_without_its_url_token(
    users, hooked, sim, db
):
    """fal signs every account's deliveries with the same key, and not the URL: the token is what binds."""
    victim, path = users.user_with_image()
    job = users.request(victim, path)  # queued, holding no task: what an adoption would take
    settings = hooked(uncertain_submission_wait_seconds=30)
    async with running(settings) as app:
        base = f"{app.http_url}/webhooks/fal/{job['id']}"
        body = {"request_id": "attacker-req", "status": "OK", "payload": {"video": {"url": "https://evil.test/v.mp4"}}}
        no_token = await signed_post(sim, base, "attacker-req", body)
        guessed = await signed_post(sim, f"{base}?token={'0' * 64}", "attacker-req", body)
        other_job = users.request(*users.user_with_image())
        replayed = await signed_post(  # a captured URL of another job, pointed at this one
            sim,
            hook_url(app, other_job["id"], token_for(db, other_job["id"])).replace(
                str(other_job["id"]), str(job["id"])
            ),
            "attacker-req",
            body,
        )
    for response in (no_token, guessed, replayed):
        assert response.status_code == 401
        assert "not a URL vidanim issued" in response.json()["error"]
    assert stored_deliveries(db, job["id"]) == []
    row = users.job(job["id"])
    assert (row["status"], row["provider_task_id"]) == ("queued", None), "nothing adopted"


async def test_a_url_without_its_token_is_refused_before_its_body_or_signature_is_read(users, hooked):
    """The token is one primary-key lookup: junk sent to a guessed URL costs no body read, no signature check."""
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app, httpx.AsyncClient(timeout=5) as client:
        answer = await client.post(f"{app.http_url}/webhooks/fal/{job['id']}", content=b"{}")  # unsigned too
    assert answer.status_code == 401
    assert "not a URL vidanim issued" in answer.json()["error"], "refused for its URL, not for its signature"
    assert refusals(app, "bad_token") == 1


async def test_without_listen_a_delivery_this_worker_records_still_wakes_its_job(users, hooked, sim):
    sim.queue_seconds, sim.run_seconds = 0.1, 0.1
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(worker_listen=False)) as app:  # no NOTIFY reaches this worker
        await run_until(app, lambda: status_of(users, job["id"]) == "completed", seconds=10)
    assert sim.requests["fal.status"] == 0, "woken by its own server's delivery, not by the 30 s fallback poll"


async def test_each_submission_gets_a_token_of_its_own_and_the_database_keeps_only_its_hash(users, hooked, sim, db):
    sim.drop_reply_next("fal.submit")
    sim.webhooks.fault_next("drop")  # the lost submission never reports: the job submits once more
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(uncertain_submission_wait_seconds=0.2)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    first, second = sorted(sim.paid_tasks_for(job["id"]), key=lambda t: t.created)
    tokens = [t.webhook_url.split("token=")[1] for t in (first, second)]
    assert tokens[0] != tokens[1]
    with db.connect() as conn:
        stored = conn.execute(
            "select token_hash, request_id from vidanim_private.video_webhook_tokens where job_id = %s"
            " order by issued_at",
            (job["id"],),
        ).fetchall()
    assert [bytes(h) for h, _ in stored] == [token_hash(t) for t in tokens], "hashes only, one per submission"
    assert [r for _, r in stored] == [None, second.id], "the delivered one is bound to its request"
    assert hooked(webhook_public_url=None).fal_webhook_url(uuid.uuid4(), new_token()) is None, "no public URL"


# trust (migration 0034): our account, per-submission tokens, orphans, what is fetched -----------
def refusals(app, reason: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "vidanim_webhook_refusals_total", {"provider": "fal", "reason": reason}
    )
    return value or 0.0


async def until(predicate, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_delivery_signed_for_another_fal_account_is_not_adopted_and_completes_no_job(users, hooked, sim, db):
    """The attacker holds a leaked URL of a job that lost an answer, and has fal sign for their own account."""
    sim.drop_reply_next("fal.submit")
    sim.webhooks.fault_next("drop")  # the lost task's own delivery never comes
    victim, path = users.user_with_image()
    job = users.request(victim, path)
    async with running(hooked()) as app:
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        await until(lambda: users.job(job["id"])["provider_status"] == "submission_uncertain")
        (task,) = sim.paid_tasks_for(job["id"])
        body = {"request_id": "attacker-req", "status": "OK", "payload": {"video": {"url": "https://evil.test/v.mp4"}}}
        answer = await signed_post(sim, task.webhook_url, "attacker-req", body, user_id="attacker-account")
        app.worker.stop()
        await runner
    assert answer.status_code == 401
    assert "another fal account" in answer.json()["error"]
    assert stored_deliveries(db, job["id"]) == []
    row = users.job(job["id"])
    assert (row["status"], row["provider_task_id"]) == ("queued", None), "nothing adopted"
    assert refusals(app, "foreign_account") == 1


async def test_deliveries_signed_for_a_foreign_account_are_refused_and_the_poll_completes_the_job(
    users, hooked, sim, db, events
):
    sim.webhooks.user_id = "someone-elses-account"
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(fal_webhook_user_id="our-account", fal_webhook_poll_seconds=1.0)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    # a retry the simulator sends after the worker stopped finds nobody (status 0): only answers count
    answered = [a for a in sim.webhooks.answers if a.status]
    assert answered
    assert {a.status for a in answered} == {401}
    assert stored_deliveries(db, job["id"]) == []
    assert sim.requests["fal.status"] >= 1, "completed by the fallback poll"
    assert refusals(app, "foreign_account") == len(answered)
    (line,) = events("webhook.refused")
    assert line["seen_user_id"] == "someone-elses-account", "the operator can see whose it was"


async def test_with_no_fal_account_configured_deliveries_are_refused_and_the_id_seen_is_logged(
    users, hooked, sim, db, events
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked(fal_webhook_user_id=None, fal_webhook_poll_seconds=1.0)) as app:
        await run_until(app, lambda: status_of(users, job["id"]) == "completed")
    assert len(events("webhook.account_unset")) == 1, "said at start"
    assert {a.status for a in sim.webhooks.answers if a.status} == {401}, "0: a retry after the worker stopped"
    assert [e["seen_user_id"] for e in events("webhook.refused")] == [sim.webhooks.user_id]
    assert refusals(app, "account_unset") >= 1
    assert stored_deliveries(db, job["id"]) == []


async def test_a_signed_ok_delivery_for_a_job_that_never_lost_an_answer_is_an_orphan_canceled_at_fal(
    users, hooked, sim, db
):
    user, path = users.user_with_image()
    job = users.request(user, path)  # queued, no task, no lost answer: nothing may be adopted
    async with running(hooked()) as app:
        stray = (await app.providers["fal"].submit("https://example.test/cat.png", None, {})).task_id
        body = {"request_id": stray, "status": "OK", "payload": {"video": {"url": "https://v3.fal.media/x.mp4"}}}
        answer = await signed_post(sim, hook_url(app, job["id"], token_for(db, job["id"])), stray, body)
        await until(lambda: ("fal", stray) in sim.cancels)
    assert (answer.status_code, answer.json()) == (200, {"outcome": "orphan"})
    row = users.job(job["id"])
    assert (row["status"], row["provider_task_id"]) == ("queued", None)


async def test_a_token_is_accepted_until_it_expires_and_another_jobs_token_is_refused(users, hooked, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    other = users.request(*users.user_with_image())
    body = {"request_id": "req-1", "status": "OK", "payload": {}}
    async with running(hooked()) as app:
        fresh = await signed_post(sim, hook_url(app, job["id"], token_for(db, job["id"], seconds=60)), "req-1", body)
        expired = await signed_post(
            sim, hook_url(app, job["id"], token_for(db, job["id"], seconds=-0.5)), "req-1", body
        )
        foreign = await signed_post(sim, hook_url(app, job["id"], token_for(db, other["id"])), "req-2", body)
    assert fresh.status_code == 200
    assert [r.status_code for r in (expired, foreign)] == [401, 401]
    assert all("not a URL vidanim issued" in r.json()["error"] for r in (expired, foreign))
    assert [d[0] for d in stored_deliveries(db, job["id"])] == ["req-1"]
    assert refusals(app, "bad_token") == 2


async def test_a_delivered_url_redirecting_to_loopback_is_not_followed_and_the_polled_video_is_stored(
    users, hooked, sim, db, storage_dir
):
    from tests.worker.test_transfer import INTERNAL, Internal

    internal = Internal()
    sim.webhooks.fault_next("drop")  # the genuine delivery is lost; a doctored one comes instead
    user, path = users.user_with_image()
    job = users.request(user, path)
    try:
        async with running(hooked()) as app:
            runner = asyncio.create_task(app.worker.run(install_signals=False))
            await until(lambda: bool(sim.paid_tasks_for(job["id"])) and status_of(users, job["id"]) == "processing")
            (task,) = sim.paid_tasks_for(job["id"])
            await until(lambda: task.phase(time.monotonic()) == "succeed")
            lure = f"{sim.base_url}/redirect?to={internal.url}"
            body = {"request_id": task.id, "status": "OK", "payload": {"video": {"url": lure}}}
            answer = await signed_post(sim, task.webhook_url, task.id, body)
            await until(lambda: status_of(users, job["id"]) == "completed")
            app.worker.stop()
            await runner
    finally:
        internal.close()
    assert answer.json() == {"outcome": "recorded"}
    assert sim.requests["redirect"] >= 1, "the lure was tried"
    assert internal.hits == 0, "the internal service was never asked"
    assert sim.requests["fal.status"] >= 1, "the task was polled for the provider's own URL"
    (stored,) = [p for p in storage_dir.rglob("*.mp4") if "video-outputs" in str(p)]
    content = stored.read_bytes()
    assert content != INTERNAL
    assert len(content) == sim.output_size


async def test_a_deeply_nested_signed_body_answers_400(users, hooked, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    deep = b'{"request_id": "req-1", "status": "OK", "payload": {"x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}"
    async with running(hooked()) as app:
        answer = await signed_post(sim, hook_url(app, job["id"], token_for(db, job["id"])), "req-1", deep)
    assert answer.status_code == 400
    assert "deeper" in answer.json()["error"]
    assert refusals(app, "too_deep") == 1


@service_role_scenario
async def test_a_flood_of_refused_deliveries_is_counted_and_logged_once_per_reason(users, hooked, sim, db, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(hooked()) as app:
        url = hook_url(app, job["id"], token_for(db, job["id"]))
        async with httpx.AsyncClient(timeout=10) as client:
            answers = []
            for n in range(1000):
                target = url if n % 2 else f"{app.http_url}/webhooks/fal/{job['id']}?token=guess{n}"
                answers.append((await client.post(target, content=b"{}")).status_code)
    assert answers == [401] * 1000
    assert (refusals(app, "bad_token"), refusals(app, "unsigned")) == (500, 500)
    assert sorted(e["code"] for e in events("webhook.refused")) == ["bad_token", "unsigned"]
