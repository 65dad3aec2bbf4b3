"""The worker end to end: real PostgreSQL, the simulator over HTTP, local storage."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from tests.support import images
from tests.support.postgrest import as_user
from tests.worker.conftest import running
from vidanim.worker.backoff import backoff_bounds
from vidanim.worker.control import REFUSED
from vidanim.worker.deliver import DELIVERY_ATTEMPTS


async def test_happy_path_on_fal_stores_the_video_once_and_completes(users, settings_for, sim, storage_dir):
    sim.run_seconds = 0.5  # long enough that polls every 20-40 ms see it running, even on a loaded machine
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for()) as app:
        stats = await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert row["status"] == "completed"
    assert row["provider"] == "fal"
    assert row["output_video_path"] == f"{user}/{job['id']}.mp4"
    assert stats.finished == 1
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    stored = storage_dir / "video-outputs" / f"{user}/{job['id']}.mp4"
    assert stored.stat().st_size == sim.output_size
    assert stored.read_bytes()[4:8] == b"ftyp"
    assert [s[0] for s in sim.submissions] == ["fal"]
    statuses = users.timeline(job["id"])
    assert statuses[0] == ("queued", None)
    assert statuses[-1][0] == "completed"
    assert ("processing", "IN_PROGRESS") in statuses
    assert users.usage(user) == 1


async def test_happy_path_on_runway(users, settings_for, sim):
    sim.run_seconds = 0.5  # long enough that polls every 20-40 ms see it running, even on a loaded machine
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="runway")) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["provider"], row["provider_status"]) == ("completed", "runway", "SUCCEEDED")
    assert [s[0] for s in sim.submissions] == ["runway"]
    assert ("processing", "RUNNING") in users.timeline(job["id"])


async def test_the_provider_reads_the_input_image_through_a_signed_url(users, settings_for, sim):
    user, path = users.user_with_image()
    users.request(user, path)
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
        ((_, _, body),) = sim.submissions
        import httpx

        async with httpx.AsyncClient() as client:
            image = await client.get(body["image_url"])
            tampered = await client.get(body["image_url"].replace("input.png", "other.png"))
    assert image.status_code == 200
    assert image.content.startswith(b"\x89PNG")
    assert tampered.status_code == 400


async def test_fal_refusing_permanently_falls_back_to_runway(users, settings_for, sim, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.fail_next("fal.submit", 1, 403, body={"detail": "User is locked. Reason: Exhausted balance"})
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["provider"]) == ("completed", "runway")
    assert [s[0] for s in sim.submissions] == ["runway"]
    assert [e["provider"] for e in events("provider.fallback")] == ["fal"]


FAL_REFUSES_IMAGE = {
    "detail": [{"loc": ["body", "image_url"], "msg": "Image too small for this model", "type": "value_error"}]
}


async def test_fal_refusing_the_image_falls_back_to_runway_when_runway_documents_it_takes_it(
    users, settings_for, sim, events
):
    user, path = users.user_with_image()  # 640x480: within Runway's limits
    job = users.request(user, path)
    sim.fail_next("fal.submit", 1, 422, body=FAL_REFUSES_IMAGE)
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["provider"]) == ("completed", "runway")
    assert [s[0] for s in sim.submissions] == ["runway"]
    assert [(e["provider"], e["fallback"]) for e in events("provider.input_refused")] == [("fal", "runway")]


async def test_an_image_refused_by_fal_that_runway_would_not_take_fails_once_and_refunds(users, settings_for, sim):
    user, path = users.user_with_image(images.png(1100, 500))  # aspect 2.2: fal's range, not Runway's
    job = users.request(user, path)
    sim.fail_next("fal.submit", 1, 422, body=FAL_REFUSES_IMAGE)
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "input_refused")
    assert row["error_message"].startswith(
        "The video provider could not use this image (Image too small for this model)."
    )
    assert "at least 300 pixels" in row["error_message"]
    assert (sim.requests["fal.submit"], sim.requests["runway.submit"]) == (1, 0)
    assert row["attempts"] == 1
    assert users.usage(user) == 0


async def test_runway_refusing_the_prompt_image_fails_the_job_at_once_without_retry(users, settings_for, sim):
    user, path = users.user_with_image()
    job = users.request(user, path)
    body = {
        "error": "Invalid input",
        "issues": [{"path": ["promptImage"], "message": "Image aspect ratio is out of range"}],
    }
    sim.fail_next("runway.submit", 1, 400, body=body)
    async with running(settings_for(providers="runway")) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "input_refused")
    assert "(Image aspect ratio is out of range)" in row["error_message"]
    assert sim.requests["runway.submit"] == 1
    assert users.usage(user) == 0


async def test_a_5xx_and_429_storm_succeeds_after_retries_within_the_jitter_bounds(users, settings_for, sim, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.fail_next("fal.submit", 2, 503)
    sim.fail_next("fal.submit", 1, 429, retry_after=0.2)
    sim.fail_next("fal.status", 3, 502)
    settings = settings_for(submit_attempts=5, retry_base_seconds=0.02, retry_cap_seconds=1.0)
    async with running(settings) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert len(sim.submissions) == 1, "rejected submissions created no task"
    retries = events("provider.retry")
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    for r in retries[:2]:
        low, high = backoff_bounds(r["attempt"] - 1, base=0.02, cap=1.0)
        assert low - 1e-3 <= r["delay"] <= high + 1e-3, r
    assert retries[2]["delay"] >= 0.2, "Retry-After is honoured"
    assert len(events("status.poll_failed")) == 3


async def test_an_outage_of_every_provider_leaves_the_job_queued_unfailed_and_unpaid(users, settings_for, sim):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.fail_next("fal.submit", 2, 503)
    sim.fail_next("runway.submit", 2, 503)
    async with running(settings_for(submit_attempts=2, breaker_open_seconds=30)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"], row["attempts"]) == ("queued", "providers_unavailable", 0)
    assert row["error_code"] is None
    assert row["locked_by"] is None
    assert sim.submissions == []
    assert users.usage(user) == 1, "still owed a video, still charged once"


async def test_moderation_fails_the_job_with_a_readable_message_and_refunds(users, settings_for, sim):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.outcome_next("fal", "moderate")
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert row["status"] == "failed"
    assert row["error_code"] == "content_moderated"
    assert row["error_message"] == "The image or prompt was rejected by the provider's content policy."
    assert users.usage(user) == 0
    assert users.output_objects() == []


async def test_a_user_cancel_while_processing_cancels_the_provider_task(users, settings_for, db, sim):
    sim.run_seconds = 30
    user, path = users.user_with_image()
    job = users.request(user, path)
    settings = settings_for(worker_lease_seconds=2)
    async with running(settings) as app:
        runner = asyncio.create_task(app.worker.run(until_idle=True, install_signals=False))
        for _ in range(200):
            if users.job(job["id"])["status"] == "processing":
                break
            await asyncio.sleep(0.02)
        from tests.support.postgrest import as_user

        with db.connect() as conn, as_user(conn, user) as cur:
            cur.execute("select status from public.cancel_video_job(%s)", (job["id"],))
        await asyncio.wait_for(runner, 10)
    assert users.job(job["id"])["status"] == "canceled"
    ((_, task_id, _),) = sim.submissions
    assert sim.cancels == [("fal", task_id)]
    assert users.output_objects() == []


async def test_an_expired_output_url_is_replaced_by_a_fresh_one(users, settings_for, sim, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.expire_urls_next(1)
    async with running(settings_for(providers="runway")) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert [e["reason"] for e in events("upload.retry")] == ["output URL answered 403"]
    assert len(users.output_objects()) == 1


async def test_an_output_url_that_keeps_failing_is_fetched_exactly_delivery_attempts_times_then_waits(
    users, settings_for, sim, events
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.expire_urls_next(100)  # every URL a poll hands out is expired already
    async with running(settings_for(providers="runway", storage_wait_seconds=30)) as app:
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 20)
    assert len(events("upload.started")) == DELIVERY_ATTEMPTS == 4
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("processing", "output_unavailable")
    assert len(sim.submissions) == 1, "the made video is fetched again later, never paid for twice"


async def test_a_deadline_cancels_the_task_and_fails_without_charge(users, settings_for, sim):
    sim.run_seconds = 30
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(job_deadline_seconds=0.5)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "timed_out")
    assert len(sim.cancels) == 1
    assert users.usage(user) == 0


async def test_a_non_video_output_is_refused(users, settings_for, sim):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.video_factory = lambda _url: b"<html>not a video</html>"
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "bad_output")
    assert users.output_objects() == []


async def test_logs_carry_ids_and_never_a_secret(users, settings_for, sim, caplog):
    import logging

    from vidanim.logs import KeyValueFormatter

    caplog.set_level(logging.DEBUG, logger="vidanim")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    text = "\n".join(KeyValueFormatter().format(r) for r in caplog.records)
    for needed in (
        "job.leased",
        "provider.started",
        "status.mapped",
        "upload.started",
        "upload.completed",
        "job.completed",
        f"job_id={job['id']}",
        f"user_id={user}",
        "provider=fal",
    ):
        assert needed in text, needed
    for secret in (sim.fal_key, sim.runway_secret, "test-local-signing-secret", "token=ey", "sig="):
        assert secret not in text, secret
    ((_, task_id, _),) = sim.submissions
    assert f"task_id={task_id}" in text


@pytest.mark.parametrize("field", ["job_id", "user_id", "provider", "task_id"])
async def test_the_failure_log_names_the_job(users, settings_for, sim, events, field):
    user, path = users.user_with_image()
    users.request(user, path)
    sim.outcome_next("fal", "fail")
    async with running(settings_for(providers="fal")) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    (failed,) = events("job.failed")
    assert failed.get(field), failed
    assert uuid.UUID(failed["job_id"])


async def test_an_input_image_deleted_before_submission_fails_the_job_readably(users, settings_for, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    with db.connect() as conn:
        conn.execute("set storage.allow_delete_query = 'true'")
        conn.execute("delete from storage.objects where bucket_id = 'video-inputs' and name = %s", (path,))
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "input_missing")
    assert "upload it again" in row["error_message"]
    assert sim.submissions == [], "nothing was sent to a provider"
    assert users.usage(user) == 0


def _replace_input_as_its_owner(db, user, path: str, size: int, mimetype: str = "image/png") -> None:
    """What a user may do after the request: overwrite its own object (RLS allows it)."""
    with db.connect() as conn, as_user(conn, user) as cur:
        cur.execute(
            "update storage.objects set metadata = %s where bucket_id = 'video-inputs' and name = %s",
            (psycopg.types.json.Jsonb({"size": size, "mimetype": mimetype}), path),
        )
        assert cur.rowcount == 1


def _input_limit(db) -> int:
    with db.connect() as conn:
        row = conn.execute("select file_size_limit from storage.buckets where id = 'video-inputs'").fetchone()
    assert row is not None
    assert row[0] is not None
    return int(row[0])


@pytest.mark.parametrize(
    ("over", "mimetype", "says"),
    [(1, "image/png", "bytes"), (0, "text/html", "type text/html")],
    ids=["a byte over the limit", "another type"],
)
async def test_an_input_replaced_beyond_the_limits_after_the_request_fails_once_refunded_unsent(
    users, settings_for, sim, db, over, mimetype, says
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    _replace_input_as_its_owner(db, user, path, _input_limit(db) + over, mimetype)
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "input_changed", 1)
    assert "replaced after the request" in row["error_message"]
    assert says in row["error_message"]
    assert sim.submissions == [], "nothing was signed or sent to a provider"
    assert users.usage(user) == 0, "refunded"


async def test_an_input_replaced_with_one_exactly_at_the_limit_is_still_submitted(users, settings_for, sim, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    _replace_input_as_its_owner(db, user, path, _input_limit(db))
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert len(sim.submissions) == 1


async def test_a_retried_jobs_message_is_written_for_its_user_and_the_providers_words_go_to_the_operator(
    users, settings_for, sim
):
    sim.fail_next("fal.status", 1, 404, body={"detail": "Request not found for key id 1234"})  # the task is gone
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(
        settings_for(providers="fal", job_max_attempts=3, retry_base_seconds=20, retry_cap_seconds=30)
    ) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("queued", "providers_unavailable"), row
    assert "key id" not in row["error_message"]
    assert row["error_message"].endswith("it will be tried again shortly.")
    assert "key id 1234" in users.internals(job["id"])["error_detail"]


@pytest.mark.parametrize("providers", ["fal", "fal,runway"])
async def test_a_refusal_fails_with_a_message_for_its_user_and_keeps_the_providers_words_for_the_operator(
    users, settings_for, sim, providers
):
    words = "num_frames must be at most 121 (trace 77ab)"
    sim.fail_next("fal.submit", 1, 400, body={"detail": words})
    sim.fail_next("runway.submit", 1, 400, body={"error": words})
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers=providers)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "runway_400" if "runway" in providers else "fal_400")
    assert row["error_message"] == REFUSED, "the providers' own words are not the user's"
    assert "trace 77ab" in users.internals(job["id"])["error_detail"], "the operator has them"
    assert users.usage(user) == 0


async def test_a_job_whose_task_keeps_vanishing_is_submitted_exactly_job_max_attempts_times(users, settings_for, sim):
    sim.fail_next("fal.status", 100, 404, body={"detail": "Request not found"})  # every task is gone when polled
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="fal", job_max_attempts=2)) as app:
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        try:
            for _ in range(500):
                if users.job(job["id"])["status"] == "failed":
                    break
                await asyncio.sleep(0.02)
        finally:
            app.worker.stop()
            await asyncio.wait_for(runner, 10)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"], row["attempts"]) == ("failed", "providers_unavailable", 2)
    assert len(sim.submissions) == 2, "one submission per attempt, and no attempt past the bound"
    assert users.usage(user) == 0, "refunded"
