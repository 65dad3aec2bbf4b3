"""Instant wake-ups: a NOTIFY wakes an idle worker at once; a timer meets a job due later."""

from __future__ import annotations

import asyncio
import time

import psycopg

from tests.db.helpers import claim, service
from tests.worker.conftest import make_settings, running
from vidanim.worker.runner import Worker

SLOW_POLL = 30.0  # so slow that only a notification can explain a prompt claim


async def wait_listening(db) -> None:
    for _ in range(200):
        with db.connect() as conn:
            (n,) = conn.execute("select count(*) from pg_stat_activity where query = 'listen vidanim_jobs'").fetchone()
        if n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the worker never listened")


async def idle(app) -> asyncio.Event:
    """Return once the worker's first claim (which finds nothing) is done: it waits idle from then on."""
    claimed = asyncio.Event()
    real = app.worker.db.claim

    async def claim_and_say(*args):
        try:
            return await real(*args)
        finally:
            claimed.set()

    app.worker.db.claim = claim_and_say
    return claimed


async def claimed_within(users, job_id, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if users.job(job_id)["status"] != "queued" or users.job(job_id)["locked_by"]:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_an_idle_worker_claims_a_new_job_at_once(users, settings_for):
    user, path = users.user_with_image()
    async with running(settings_for(worker_idle_poll_seconds=SLOW_POLL)) as app:
        first_claim = await idle(app)
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        await asyncio.wait_for(first_claim.wait(), 10)  # it found nothing; the worker is idle now
        await wait_listening(users.db)
        job = users.request(user, path)
        assert await claimed_within(users, job["id"], 5), "the notification woke the worker"
        app.worker.stop()
        await runner


async def test_without_listening_only_the_periodic_claim_finds_a_job(users, settings_for):
    user, path = users.user_with_image()
    async with running(settings_for(worker_idle_poll_seconds=SLOW_POLL, worker_listen=False)) as app:
        first_claim = await idle(app)
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        await asyncio.wait_for(first_claim.wait(), 10)
        job = users.request(user, path)
        assert not await claimed_within(users, job["id"], 1.5), "the control: no wake-up without LISTEN"
        app.worker.stop()
        await runner


async def test_a_job_due_later_is_met_by_a_timer_not_a_poll(users, settings_for, db):
    user, path = users.user_with_image()
    job = users.request(user, path)
    with db.connect() as conn:
        claim(conn, "other")
        service(conn, "select public.defer_video_job(%s, 'other', 1.0, 'providers_unavailable')", (job["id"],))
    async with running(settings_for(worker_idle_poll_seconds=SLOW_POLL)) as app:
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        await wait_listening(db)
        with db.connect() as conn:  # it becomes due in 0.8 s, announced now
            service(conn, "select 1")
            conn.execute(
                "update public.video_jobs set next_attempt_at = now() + interval '0.8 seconds' where id = %s",
                (job["id"],),
            )
        assert not await claimed_within(users, job["id"], 0.4), "not before it is due"
        assert await claimed_within(users, job["id"], 5), "the timer woke the worker when it fell due"
        app.worker.stop()
        await runner


def arm(db, worker: str = "listener", seconds: int = 60) -> None:
    with db.connect() as conn:
        service(conn, "select public.arm_video_job_wakeups(%s, %s)", (worker, seconds))


def test_claimable_changes_notify_with_the_due_time_and_a_claim_does_not(db, users):
    user, path = users.user_with_image()
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("listen vidanim_jobs")
        arm(db)
        job = users.request(user, path)
        (first,) = list(listener.notifies(timeout=2, stop_after=1))
        with db.connect() as conn:
            due = conn.execute(
                "select (ceil(extract(epoch from next_attempt_at) * 1000) / 1000)::numeric(16, 3)::text"
                " from public.video_jobs where id = %s",
                (job["id"],),
            ).fetchone()[0]
            claim(conn, "w1")
        assert (first.channel, first.payload) == ("vidanim_jobs", str(due))
        assert list(listener.notifies(timeout=0.5)) == [], "a claim makes nothing claimable"
        arm(db)
        with db.connect() as conn:
            service(conn, "select public.release_video_jobs('w1', %s)", ([job["id"]],))
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1, "a lease handed back is claimable"


def test_a_new_job_sends_no_notify_when_no_worker_is_armed(db, users):
    user, path = users.user_with_image()
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("listen vidanim_jobs")
        users.request(user, path)
        assert list(listener.notifies(timeout=0.5)) == [], "nobody waits: the request's commit notifies nobody"
        arm(db)
        users.request(user, path)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1, "the control: an armed worker is woken"


def test_an_armed_worker_is_woken_once_until_it_arms_again(db, users):
    user, path = users.user_with_image()
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("listen vidanim_jobs")
        arm(db, "w1")
        arm(db, "w2")
        users.request(user, path)
        users.request(user, path)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1, "the first job wakes both workers"
        assert list(listener.notifies(timeout=0.5)) == [], "the second job finds them disarmed"
        arm(db, "w2")
        users.request(user, path)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1, "armed again, woken again"


def test_an_arm_that_ran_out_wakes_nobody(db, users):
    user, path = users.user_with_image()
    with psycopg.connect(db.dsn, autocommit=True) as listener:
        listener.execute("listen vidanim_jobs")
        arm(db, "gone")
        with db.connect() as conn:  # its worker died a second ago without disarming
            conn.execute(
                "update vidanim_private.video_job_wakeup_listeners set armed_until = now() - interval '1 second'"
            )
        users.request(user, path)
        assert list(listener.notifies(timeout=0.5)) == [], "an expired arm is nobody's"


async def test_an_idle_worker_woken_once_is_woken_again_by_the_next_job(users, settings_for):
    user, path = users.user_with_image()
    async with running(settings_for(worker_idle_poll_seconds=SLOW_POLL)) as app:
        first_claim = await idle(app)
        runner = asyncio.create_task(app.worker.run(install_signals=False))
        await asyncio.wait_for(first_claim.wait(), 10)
        await wait_listening(users.db)
        first = users.request(user, path)
        assert await claimed_within(users, first["id"], 5), "the first job woke the worker"
        for _ in range(250):  # until the worker has armed again after its wake-up
            with users.db.connect() as conn:
                (armed,) = conn.execute(
                    "select count(*) from vidanim_private.video_job_wakeup_listeners where armed"
                ).fetchone()
            if armed:
                break
            await asyncio.sleep(0.02)
        second = users.request(user, path)
        assert await claimed_within(users, second["id"], 5), "the worker armed again: the second job woke it too"
        app.worker.stop()
        await runner


async def test_of_two_announced_due_times_the_earlier_sets_the_wake_timer(db, sim, storage_dir):
    worker = Worker(settings=make_settings(db, sim, storage_dir), db=None, pipeline=None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for first, second in ((5.0, 600.0), (600.0, 5.0)):
        worker._wake_timer = None
        worker._due_at(str(time.time() + first))
        worker._due_at(str(time.time() + second))
        assert worker._wake_timer is not None
        left = worker._wake_timer.when() - loop.time()
        assert 0 < left <= 5.0, f"due in 5 s and in 600 s: the timer is set for {left:.1f} s"
        worker._wake_timer.cancel()


async def test_a_due_time_announced_after_the_wake_timer_fired_sets_a_new_timer(db, sim, storage_dir):
    worker = Worker(settings=make_settings(db, sim, storage_dir), db=None, pipeline=None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    worker._due_at(str(time.time() + 0.05))
    await asyncio.wait_for(worker._wake.wait(), 5)  # the first job's timer fired and woke the worker
    worker._wake.clear()
    worker._due_at(str(time.time() + 5.0))  # the next job, due later
    assert worker._wake_timer is not None
    left = worker._wake_timer.when() - loop.time()
    assert 4.0 < left <= 5.0, f"due in 5 s after the first timer fired: the timer is set for {left:.1f} s"
    worker._wake_timer.cancel()
