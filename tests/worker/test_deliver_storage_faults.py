"""Delivery that cannot loop: Storage refusals and failures, classified; no job fails for our faults.

The worker runs against the Storage stand-in that behaves as the real server
(tests/support/fake_supabase_storage.py), or against local storage with a fault
planted, over a real PostgreSQL and the provider simulator.
"""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests.support.fake_supabase_storage import FakeSupabaseStorage
from tests.worker.conftest import running
from vidanim.storage.base import StorageError
from vidanim.storage.catalog import ObjectCatalog
from vidanim.storage.supabase import SupabaseStorage
from vidanim.worker.deliver import DELIVERY_ATTEMPTS
from vidanim.worker.transfer import human_size


@pytest.fixture
def supabase(db):
    with FakeSupabaseStorage(db.dsn, stall_seconds=2.0) as fake:
        yield fake


def on_supabase(settings_for, fake, key: str, **overrides):
    return settings_for(storage_backend="supabase", supabase_url=fake.url, supabase_service_role_key=key, **overrides)


async def test_a_video_over_the_output_buckets_limit_fails_its_job_once_within_seconds(
    users, settings_for, sim, db, supabase
):
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = 10000 where id = 'video-outputs'")
    user, path = users.user_with_image()
    job = users.request(user, path)
    started = time.monotonic()
    async with running(on_supabase(settings_for, supabase, supabase.service_key)) as app:
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 10)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "output_too_large")
    assert row["error_message"] == (
        f"The video is {human_size(sim.output_size)}; this service stores videos of at most 10 KB."
    )
    assert time.monotonic() - started < 10
    assert users.usage(user) == 0, "refunded"
    uploads = [r for r in supabase.requests if r.startswith("POST video-outputs/")]
    assert uploads == [], "nothing was sent: the size was known before"
    assert len(sim.submissions) == 1


async def test_a_video_over_the_projects_global_limit_fails_its_job_at_storages_first_refusal(
    users, settings_for, sim, db
):
    """No bucket limit for the worker to see: Storage's own 413 is the video's size, never a lost upload."""
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = null where id = 'video-outputs'")
    user, path = users.user_with_image()
    job = users.request(user, path)
    with FakeSupabaseStorage(db.dsn, stall_seconds=2.0, file_size_limit=sim.output_size - 1) as fake:
        async with running(on_supabase(settings_for, fake, fake.service_key)) as app:
            await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 10)
        uploads = [r for r in fake.requests if r.startswith("POST video-outputs/")]
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "output_too_large"), row
    assert row["error_message"] == f"The video is {human_size(sim.output_size)}, larger than this service stores."
    assert len(uploads) == 1, "refused once, not retried as a lost upload"
    assert users.output_objects() == []
    assert users.usage(user) == 0, "refunded"


async def test_a_video_exactly_at_the_projects_global_limit_is_stored(users, settings_for, sim, db):
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = null where id = 'video-outputs'")
    user, path = users.user_with_image()
    job = users.request(user, path)
    with FakeSupabaseStorage(db.dsn, stall_seconds=2.0, file_size_limit=sim.output_size) as fake:
        async with running(on_supabase(settings_for, fake, fake.service_key)) as app:
            await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 10)
    assert users.job(job["id"])["status"] == "completed"
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]


async def test_a_wrong_service_key_fails_no_job_and_the_right_one_completes_each_with_one_payment(
    users, settings_for, sim, supabase, events
):
    user, path = users.user_with_image()
    queued = users.request(user, path)
    # a service_role key of another project (or a rotated secret): well formed, refused by Storage
    other = jwt.encode({"role": "service_role"}, "another-projects-jwt-secret-32-chars!", algorithm="HS256")
    wrong = on_supabase(settings_for, supabase, other, storage_wait_seconds=30)
    async with running(wrong) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(queued["id"])
    assert (row["status"], row["waiting_reason"], row["attempts"]) == ("queued", "storage_unavailable", 0)
    assert row["error_code"] is None
    assert sim.submissions == [], "no provider is paid while the input cannot be signed"
    assert [(e["status"], e["code"]) for e in events("storage.refused")] == [(403, "AccessDenied")]

    with users.db.connect() as conn:  # the operator fixed the key: make the job due now
        conn.execute("update public.video_jobs set next_attempt_at = now() where id = %s", (queued["id"],))
    async with running(on_supabase(settings_for, supabase, supabase.service_key)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(queued["id"])
    assert (row["status"], row["waiting_reason"]) == ("completed", None)
    assert len(sim.submissions) == 1
    assert supabase.objects[("video-outputs", f"{user}/{queued['id']}.mp4")].size == sim.output_size


async def test_a_wrong_key_at_delivery_keeps_the_made_video_waiting_past_the_deadline(
    users, settings_for, sim, supabase
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    # First run: submitted and followed with the right key, but delivery meets a wrong key.
    ok = on_supabase(settings_for, supabase, supabase.service_key, storage_wait_seconds=30, job_deadline_seconds=1)
    async with running(ok) as app:
        revoked = SupabaseStorage(supabase_url=supabase.url, service_role_key="revoked")
        app.worker.pipeline.storage = RevokedAfterSigning(app.storage, revoked)
        await app.worker.run(until_idle=True, install_signals=False)
        await revoked.aclose()
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("processing", "storage_unavailable")
    await asyncio.sleep(1.1)  # past the job's deadline: the video is made, so it still counts
    with users.db.connect() as conn:
        conn.execute("update public.video_jobs set next_attempt_at = now() where id = %s", (job["id"],))
    async with running(ok) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("completed", None)
    assert len(sim.submissions) == 1, "resumed the made video: nothing paid twice"


async def test_a_key_that_cannot_see_the_input_storage_objects_holds_makes_the_job_wait_never_fail(
    users, settings_for, sim, supabase, events
):
    user, path = users.user_with_image()
    queued = users.request(user, path)
    async with running(on_supabase(settings_for, supabase, supabase.service_key, storage_wait_seconds=30)) as app:
        # the anon key, as if configured as the service key: Storage hides the input (NoSuchKey)
        hidden = SupabaseStorage(
            supabase_url=supabase.url, service_role_key=supabase.anon_key, catalog=ObjectCatalog(app.pool)
        )
        app.worker.pipeline.storage = hidden
        await app.worker.run(until_idle=True, install_signals=False)
        await hidden.aclose()
    row = users.job(queued["id"])
    assert (row["status"], row["waiting_reason"], row["error_code"]) == ("queued", "storage_unavailable", None)
    assert sim.submissions == [], "no provider is paid while the input cannot be signed"
    assert [(e["status"], e["code"]) for e in events("storage.refused")] == [(403, "HiddenByKey")]


class RevokedAfterSigning:
    """The key works for signing the input, then is revoked before the delivery."""

    def __init__(self, inner, revoked):
        self.inner, self.revoked = inner, revoked

    def __getattr__(self, name):
        return getattr(self.revoked, name)

    async def sign(self, *args, **kwargs):
        return await self.inner.sign(*args, **kwargs)


class LosesTheAnswer:
    """Storage that stores the upload but loses the answer, as a dropped connection does."""

    def __init__(self, inner, *, store: bool):
        self.inner, self.store, self.calls = inner, store, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def upload(self, bucket, path, chunks, *, content_type, size=None):
        self.calls += 1
        if self.calls == 1:
            if self.store:
                await self.inner.upload(bucket, path, chunks, content_type=content_type, size=size)
            raise StorageError("storage could not be reached (ReadError)", status=503)
        return await self.inner.upload(bucket, path, chunks, content_type=content_type, size=size)


@pytest.mark.parametrize("stored", [True, False], ids=["stored-anyway", "not-stored"])
async def test_after_an_upload_error_the_worker_asks_whether_the_video_is_there(
    users, settings_for, sim, events, stored
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for()) as app:
        flaky = LosesTheAnswer(app.storage, store=stored)
        app.worker.pipeline.storage = flaky
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    assert flaky.calls == (1 if stored else 2)
    reasons = [e.get("reason") for e in events("upload.completed")]
    assert ("stored despite the error" in reasons) is stored
    assert len(sim.submissions) == 1


class StoresPartThenFails:
    """Storage that keeps half of the first upload and loses the answer, as a connection cut mid-body does."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def upload(self, bucket, path, chunks, *, content_type, size=None):
        self.calls += 1
        if self.calls == 1:
            data = b"".join([chunk async for chunk in chunks])

            async def first_half():
                yield data[: len(data) // 2]

            await self.inner.upload(bucket, path, first_half(), content_type=content_type)
            raise StorageError("storage could not be reached (ReadError)", status=503)
        return await self.inner.upload(bucket, path, chunks, content_type=content_type, size=size)


async def test_a_partly_stored_video_after_an_upload_error_is_removed_and_uploaded_again_whole(
    users, settings_for, sim, events
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for()) as app:
        flaky = StoresPartThenFails(app.storage)
        app.worker.pipeline.storage = flaky
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 20)
        stored = await app.storage.info("video-outputs", f"{user}/{job['id']}.mp4")
    assert users.job(job["id"])["status"] == "completed"
    assert stored is not None
    assert stored.size == sim.output_size, "the whole video, not the half the first upload left"
    assert [(e["size"], e["expected"]) for e in events("upload.partial")] == [(sim.output_size // 2, sim.output_size)]
    assert flaky.calls == 2
    assert len(sim.submissions) == 1


class NeverStores:
    """Storage whose every upload is lost on the way (a 503), nothing stored."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def upload(self, bucket, path, chunks, *, content_type, size=None):
        self.calls += 1
        async for _ in chunks:
            pass
        raise StorageError("storage is not available", status=503)


async def test_an_upload_that_keeps_failing_is_tried_exactly_delivery_attempts_times_then_waits(
    users, settings_for, sim
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(storage_wait_seconds=30)) as app:
        failing = NeverStores(app.storage)
        app.worker.pipeline.storage = failing
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 20)
    assert failing.calls == DELIVERY_ATTEMPTS == 4
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("processing", "storage_unavailable")
    assert len(sim.submissions) == 1


async def test_a_refused_storage_key_opens_one_shared_breaker_one_alert_and_jobs_wait_without_asking_storage(
    users, settings_for, sim, supabase, events
):
    jobs = []
    for _ in range(4):
        user, path = users.user_with_image()
        jobs.append(users.request(user, path))
    other = jwt.encode({"role": "service_role"}, "another-projects-jwt-secret-32-chars!", algorithm="HS256")
    async with running(on_supabase(settings_for, supabase, other, storage_wait_seconds=30)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    rows = [users.job(j["id"]) for j in jobs]
    assert {(r["status"], r["waiting_reason"], r["error_code"]) for r in rows} == {
        ("queued", "storage_unavailable", None)
    }
    assert len(events("storage.breaker_opened")) == 1, "one alert, not one per job"

    # Due again with the key still wrong: one probe asks Storage, the others wait without asking.
    signs = len([r for r in supabase.requests if r.startswith("POST sign/")])
    with users.db.connect() as conn:
        conn.execute("update public.video_jobs set next_attempt_at = now()")
    async with running(on_supabase(settings_for, supabase, other, storage_wait_seconds=30)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert len([r for r in supabase.requests if r.startswith("POST sign/")]) == signs + 1, "only the probe asked"
    assert len(events("storage.breaker_opened")) == 1, "a failed probe raises no second alert"
    assert {users.job(j["id"])["waiting_reason"] for j in jobs} == {"storage_unavailable"}
    with users.db.connect() as conn:
        state = conn.execute(
            "select state, kind from vidanim_private.video_provider_breakers where provider = 'storage'"
        ).fetchone()
    assert state == ("open", "credentials")
    assert sim.submissions == []

    # the operator fixes the key; the restarted worker probes once, closes the breaker, runs every job
    with users.db.connect() as conn:
        conn.execute("update public.video_jobs set next_attempt_at = now()")
    async with running(on_supabase(settings_for, supabase, supabase.service_key)) as app:
        # a job that met the breaker half open, while the probe was in flight, waits a second more
        for _ in range(5):
            await app.worker.run(until_idle=True, install_signals=False)
            if {users.job(j["id"])["status"] for j in jobs} == {"completed"}:
                break
            await asyncio.sleep(1.1)
    assert {users.job(j["id"])["status"] for j in jobs} == {"completed"}
    assert len(events("storage.breaker_closed")) == 1
    assert len(sim.submissions) == 4
