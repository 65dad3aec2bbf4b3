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
    sign,
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


def stored_deliveries(db, job_id) -> list[tuple[str, str, int]]:
    with db.connect() as conn:
        return conn.execute(
            "select request_id, outcome, deliveries from vidanim_private.video_provider_deliveries"
            " where job_id = %s order by first_received_at",
            (job_id,),
        ).fetchall()


async def signed_post(
    sim, url: str, request_id: str, body: dict[str, Any], *, key=None, at: float | None = None, **kw: Any
) -> httpx.Response:
    """POST a delivery signed as fal signs (the worker's server runs in this event loop: async)."""
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": "application/json",
        HEADER_REQUEST_ID: request_id,
        HEADER_USER_ID: "sim-fal-user",
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(key or sim.webhooks.key, request_id, "sim-fal-user", timestamp, raw),
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
    assert task.webhook_url == settings.fal_webhook_url(job["id"])
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
        url = settings.fal_webhook_url(job["id"])
        again = await signed_post(sim, url, task.id, {"request_id": task.id, "status": "OK", "payload": {}})
        # a request at fal that this job never recorded (as a lost submission's would be)
        stray = (await app.providers["fal"].submit("https://example.test/cat.png", None, {})).task_id
        orphan = await signed_post(sim, url, stray, {"request_id": stray, "status": "OK", "payload": {}})
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
        url = settings.fal_webhook_url(job["id"])
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
        real = app.worker.db.record_delivery
        calls = 0

        async def down_once(*args: Any) -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise psycopg.OperationalError("the database went away")
            return await real(*args)

        app.worker.db.record_delivery = down_once  # type: ignore[method-assign]
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
            settings.fal_webhook_url(other_job["id"]).replace(str(other_job["id"]), str(job["id"])),
            "attacker-req",
            body,
        )
    for response in (no_token, guessed, replayed):
        assert response.status_code == 401
        assert "not a URL vidanim issued" in response.json()["error"]
    assert stored_deliveries(db, job["id"]) == []
    row = users.job(job["id"])
    assert (row["status"], row["provider_task_id"]) == ("queued", None), "nothing adopted"


async def test_the_url_token_is_bound_to_the_job_and_to_this_deployments_fal_key(hooked, settings_for):
    settings = hooked()
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    url_a, url_b = settings.fal_webhook_url(job_a), settings.fal_webhook_url(job_b)
    assert url_a.split("token=")[1] != url_b.split("token=")[1]
    other_deployment = hooked(fal_key="another-accounts-key")
    assert other_deployment.fal_webhook_url(job_a) != url_a
    assert settings_for(providers="fal").fal_webhook_url(job_a) is None, "no public URL: no webhooks"
