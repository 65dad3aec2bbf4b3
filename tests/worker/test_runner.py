"""The worker loop's own limits: how many jobs one worker runs at once."""

from __future__ import annotations

import asyncio

from tests.worker.conftest import running

JOBS = 6
CONCURRENCY = 3


async def test_a_worker_runs_at_most_worker_concurrency_jobs_at_once_and_reaches_that_many(users, settings_for, sim):
    sim.queue_seconds, sim.run_seconds = 0.1, 0.1
    user, path = users.user_with_image()
    jobs = [users.request(user, path) for _ in range(JOBS)]
    running_now, most = 0, 0
    async with running(settings_for(worker_concurrency=CONCURRENCY, worker_claim_batch=20)) as app:
        real = app.worker.pipeline.run

        async def counted(job, control):
            nonlocal running_now, most
            running_now += 1
            most = max(most, running_now)
            try:
                await real(job, control)
            finally:
                running_now -= 1

        app.worker.pipeline.run = counted
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 30)
    assert {users.job(j["id"])["status"] for j in jobs} == {"completed"}
    assert most == CONCURRENCY, f"at most {CONCURRENCY} at once, and that many reached: {most}"


async def test_a_worker_with_a_prune_setting_prunes_old_ended_jobs_and_keeps_the_rest(users, settings_for, db):
    user, path = users.user_with_image()
    old, recent = users.request(user, path), users.request(user, path)
    with db.connect() as conn:
        conn.execute("alter table public.video_jobs disable trigger video_jobs_enforce_transition")
        conn.execute(
            "update public.video_jobs set status = 'failed', error_code = 'x', completed_at = now() - %s::interval"
            " where id = %s",
            ("91 days", old["id"]),
        )
        conn.execute(
            "update public.video_jobs set status = 'failed', error_code = 'x', completed_at = now() - %s::interval"
            " where id = %s",
            ("89 days", recent["id"]),
        )
        conn.execute("alter table public.video_jobs enable trigger video_jobs_enforce_transition")
    settings = settings_for(worker_prune_older_than_days=90, worker_prune_batch_size=1, worker_idle_poll_seconds=0.05)
    async with running(settings) as app:
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        for _ in range(500):
            with db.connect() as conn:
                (left,) = conn.execute("select count(*) from public.video_jobs").fetchone()
            if left < 2:
                break
            await asyncio.sleep(0.02)
        app.worker.stop()
        await runner
    with db.connect() as conn:
        ids = [r[0] for r in conn.execute("select id from public.video_jobs").fetchall()]
    assert ids == [recent["id"]], "the job that ended 91 days ago went, the one of 89 days stayed"
