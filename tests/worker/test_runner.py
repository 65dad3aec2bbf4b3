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
