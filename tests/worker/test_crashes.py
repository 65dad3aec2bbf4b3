"""Workers die, get redeployed and lose leases: no job is lost, none is paid twice."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.grant_modes import service_role_scenario
from tests.worker.conftest import running
from vidanim.storage.local import LocalStorage


class ProcessDied(BaseException):
    """Stands for the process being killed at this exact point."""


class DiesAfterUpload:
    """Storage that stores the video, then 'kills the process' before the status update."""

    def __init__(self, inner: LocalStorage):
        self.inner = inner
        self.uploads = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def upload(self, *args, **kwargs):
        await self.inner.upload(*args, **kwargs)
        self.uploads += 1
        raise ProcessDied


def steal_lease(db, job_id) -> None:
    """Another worker takes the job over, as after a lease the first worker let expire."""
    with db.connect() as conn:
        conn.execute(
            "update public.video_jobs set locked_by = 'intruder', locked_until = now() + interval '1 min'"
            " where id = %s",
            (job_id,),
        )


async def test_a_crash_between_upload_and_status_update_leaves_one_object_and_a_completed_job(
    users, settings_for, sim, events
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    first = settings_for(worker_lease_seconds=2)
    async with running(first) as app:
        dying = DiesAfterUpload(app.storage)
        app.worker.pipeline.storage = dying
        with pytest.raises(ProcessDied):
            await app.worker.run(until_idle=True, install_signals=False)
    assert dying.uploads == 1
    assert users.job(job["id"])["status"] == "processing", "the dead worker never recorded completion"
    await asyncio.sleep(2.1)  # its lease runs out, as after a SIGKILL
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert row["status"] == "completed"
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]
    assert len(sim.submissions) == 1
    assert [e["reason"] for e in events("upload.skipped")] == ["already stored"]


async def test_a_worker_that_lost_its_lease_cancels_the_task_it_created(users, settings_for, db, sim, events):
    user, path = users.user_with_image()
    job = users.request(user, path)
    create_task = sim._new_task

    def taken_over_while_submitting(*args, **kwargs):
        # While fal creates the task, and before the worker hears of it, another worker
        # takes the job over: the moment is fixed, not left to a sleep.
        steal_lease(db, job["id"])
        return create_task(*args, **kwargs)

    sim._new_task = taken_over_while_submitting
    settings = settings_for(worker_lease_seconds=2)
    async with running(settings) as app:
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 10)
    assert users.job(job["id"])["provider_task_id"] is None
    ((_, task_id, _),) = sim.submissions
    assert sim.cancels == [("fal", task_id)]
    assert [e["task_id"] for e in events("provider.task_orphaned")] == [task_id]


async def test_a_lease_taken_over_during_a_long_poll_makes_the_worker_leave_the_job(
    users, settings_for, db, sim, events
):
    sim.run_seconds = 60  # the provider works for a minute: no status change to notice
    user, path = users.user_with_image()
    job = users.request(user, path)
    settings = settings_for(worker_lease_seconds=2)  # renewed every 0.4 s
    async with running(settings) as app:
        runner = asyncio.create_task(app.worker.run(until_idle=True, install_signals=False))

        # Wait until the task runs: from then on its status stays the same, so only the
        # lease renewal can notice the takeover.
        def running_now() -> list[dict]:
            return [e for e in events("status.mapped") if e["mapped"] == "processing"]

        for _ in range(100):
            await asyncio.sleep(0.05)
            if running_now():
                break
        assert running_now(), "the provider task never started running"
        steal_lease(db, job["id"])
        await asyncio.wait_for(runner, 5)
    assert [e["reason"] for e in events("job.left")] == ["lease lost"]
    row = users.job(job["id"])
    assert (row["status"], row["locked_by"]) == ("processing", "intruder")
    assert sim.cancels == [], "the task now belongs to the other worker"


async def stop_once_processing(app, users, job) -> None:
    """Run the worker until the job is processing at its provider, then stop it (leases handed back)."""
    runner = asyncio.create_task(app.worker.run(install_signals=False))
    for _ in range(200):
        if users.job(job["id"])["status"] == "processing":
            break
        await asyncio.sleep(0.02)
    app.worker.stop()
    await asyncio.wait_for(runner, 10)


async def test_sigterm_hands_leases_back_so_another_worker_continues_at_once(users, settings_for, sim):
    sim.run_seconds = 1.0
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(worker_lease_seconds=300)) as app:
        await stop_once_processing(app, users, job)
    row = users.job(job["id"])
    assert row["status"] == "processing"
    assert row["locked_by"] is None, "the lease was handed back"
    async with running(settings_for()) as app:  # no waiting for a 300 s lease
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert len(sim.submissions) == 1


@pytest.mark.parametrize("provider", ["runway", "fal"])
async def test_a_task_at_a_provider_this_worker_has_no_key_for_waits_for_a_worker_that_has(
    users, settings_for, sim, events, caplog, provider
):
    other = "fal" if provider == "runway" else "runway"
    sim.run_seconds = 1.0
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers=provider, worker_lease_seconds=300)) as app:
        await stop_once_processing(app, users, job)
    async with running(settings_for(providers=other, breaker_open_seconds=0.5)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["provider"], row["waiting_reason"]) == ("processing", provider, "provider_unconfigured")
    assert row["error_code"] is None, "the user's job does not fail for how a worker is configured"
    (waiting,) = [r for r in caplog.records if getattr(r, "event", None) == "job.waiting"]
    assert (waiting.levelno, waiting.fields["provider"]) == (logging.ERROR, provider), "the operator is told"
    await asyncio.sleep(1.1)  # due again (a wait is at least a second)
    async with running(settings_for(providers=provider)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert len(sim.submissions) == 1, "the running task was followed, never paid for again"


async def test_a_task_no_worker_has_a_key_for_fails_refunded_once_past_the_jobs_deadline(users, settings_for, sim):
    sim.run_seconds = 30
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="runway", worker_lease_seconds=300)) as app:
        await stop_once_processing(app, users, job)
    await asyncio.sleep(0.6)
    async with running(settings_for(providers="fal", job_deadline_seconds=0.5)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "provider_unconfigured"), row
    assert "runway" in users.internals(job["id"])["error_detail"]
    assert users.usage(user) == 0, "refunded: it does not stay processing, holding the user's quota"


WORKER_SCRIPT = """
import asyncio, sys
from vidanim.worker.assemble import assembled
from tests.worker.conftest import make_settings
from tests.conftest import Database
from vidanim.simulator import Simulator

class Sim:  # the simulator runs in the test process; this names its address and keys
    fal_key, runway_secret, base_url = sys.argv[2], sys.argv[3], sys.argv[4]

async def main():
    settings = make_settings(Database(sys.argv[1], "modern"), Sim, __import__("pathlib").Path(sys.argv[5]),
                             worker_lease_seconds=int(sys.argv[7]), worker_id=sys.argv[6])
    async with assembled(settings) as app:
        await app.worker.run(install_signals=True)

asyncio.run(main())
"""


async def start_worker_process(db, sim, storage_dir, log, worker_id, lease_seconds, users, job_id):
    """A real `vidanim` worker process; returns once it has submitted the job's task."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER_SCRIPT,
                db.dsn,
                sim.fal_key,
                sim.runway_secret,
                sim.base_url,
                str(storage_dir),
                worker_id,
                str(lease_seconds),
            ],
            cwd=os.getcwd(),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    deadline = time.monotonic() + 20
    while users.job(job_id)["status"] != "processing":
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the worker never submitted: {log.read_text()}")
        await asyncio.sleep(0.05)
    return proc


@pytest.mark.slow
async def test_sigkill_while_polling_then_a_second_worker_finishes_with_one_submission(
    users, db, settings_for, sim, storage_dir, tmp_path
):
    sim.run_seconds = 2.0
    user, path = users.user_with_image()
    job = users.request(user, path)
    proc = await start_worker_process(
        db, sim, storage_dir, tmp_path / "worker.log", "doomed-worker", 2, users, job["id"]
    )
    try:
        await asyncio.sleep(0.2)  # it is polling now
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert users.job(job["id"])["locked_by"] == "doomed-worker"
    await asyncio.sleep(2.1)  # the dead worker's lease runs out
    async with running(settings_for()) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert row["status"] == "completed"
    assert len(sim.submissions) == 1, "the second worker resumed the task instead of paying again"
    assert sim.cancels == []
    assert users.output_objects() == [f"{user}/{job['id']}.mp4"]


@service_role_scenario
@pytest.mark.slow
async def test_four_workers_and_400_jobs_complete_each_exactly_once(users, settings_for, sim):
    sim.queue_seconds, sim.run_seconds = 0.02, 0.05
    sim.output_size = 4096
    jobs = []
    for i in range(40):
        user, path = users.user_with_image()
        jobs += [users.request(user, path, prompt=f"job {i}-{k}")["id"] for k in range(10)]
    assert len(jobs) == 400
    settings = [settings_for(worker_concurrency=50, worker_claim_batch=25, worker_db_pool_size=4) for _ in range(4)]

    async def one(s):
        async with running(s) as app:
            return await app.worker.run(until_idle=True, install_signals=False)

    stats = await asyncio.wait_for(asyncio.gather(*(one(s) for s in settings)), 120)
    claimed = [j for st in stats for j in st.job_ids]
    assert sorted(claimed) == sorted(jobs), "every job was run by exactly one worker"
    assert all(st.claimed > 0 for st in stats), "the work was shared"
    with users.db.connect() as conn:
        statuses = dict(conn.execute("select status, count(*) from public.video_jobs group by status").fetchall())
        completions = conn.execute("select count(*) from public.video_job_events where status = 'completed'").fetchone()
    assert statuses == {"completed": 400}
    assert completions == (400,)
    prompts = [body["prompt"] for _, _, body in sim.submissions]
    assert len(prompts) == 400
    assert len(set(prompts)) == 400, "no job was submitted twice"
    assert len(users.output_objects()) == 400


@pytest.mark.slow
async def test_a_real_sigterm_hands_the_lease_back_and_the_process_exits_cleanly(
    users, db, settings_for, sim, storage_dir, tmp_path
):
    sim.run_seconds = 30
    user, path = users.user_with_image()
    job = users.request(user, path)
    log = tmp_path / "worker.log"
    proc = await start_worker_process(db, sim, storage_dir, log, "polite-worker", 300, users, job["id"])
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    row = users.job(job["id"])
    assert (row["status"], row["locked_by"]) == ("processing", None), "handed back, not abandoned"
    assert sim.cancels == [], "a shutdown is not a cancel: the task keeps running for the next worker"
