"""The global daily budget: several worker processes, one cap, never passed; at the cap jobs wait."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import psycopg

from tests.db.helpers import service
from tests.support.grant_modes import service_role_scenario
from tests.support.postgrest import as_user
from tests.support.seed import set_limits
from tests.worker.conftest import running, worker_env
from vidanim.ports import free_port
from vidanim.pricing import estimate_cost


@service_role_scenario
def test_four_worker_processes_and_500_jobs_never_commit_more_than_the_cap(users, db, sim, storage_dir, tmp_path):
    per_job = estimate_cost("fal", "fal-ai/kling-video/v2.1/standard/image-to-video", {})
    cap = per_job * 100
    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(%s)", (cap,))
    jobs = []
    for _ in range(50):
        user, path = users.user_with_image()
        jobs += [users.request(user, path) for _ in range(10)]
    env = worker_env(db, sim, storage_dir)
    logs = [tmp_path / f"worker-{i}.log" for i in range(4)]
    with contextlib.ExitStack() as files:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "vidanim", "worker", "--until-idle"],
                env={**env, "VIDANIM_WORKER_ID": f"budget-{i}"},
                stdout=subprocess.DEVNULL,
                stderr=files.enter_context(log.open("wb")),
            )
            for i, log in enumerate(logs)
        ]
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(120) == 0, log.read_text()[-2000:]

    with db.connect() as conn:
        (committed, submissions) = conn.execute(
            "select sum(committed_usd), sum(submissions) from vidanim_private.video_spend"
        ).fetchone()
        statuses = Counter(
            conn.execute("select status || ':' || coalesce(waiting_reason, '') from public.video_jobs").fetchall()
        )
        costs = conn.execute("select sum(estimated_cost_usd) from vidanim_private.video_job_internals").fetchone()[0]
    assert committed <= cap, "the day's committed spend passed the cap"
    assert committed == cap == costs
    assert submissions == 100 == len(sim.submissions)
    assert statuses == {("completed:",): 100, ("queued:budget_reached",): 400}, "nothing failed at the cap"


def test_raising_the_cap_wakes_the_jobs_waiting_for_budget(users, db, sim, storage_dir, settings_for):
    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(0)")
    user, path = users.user_with_image()
    job = users.request(user, path)

    async def run() -> None:
        async with running(settings_for()) as app:
            await app.worker.run(until_idle=True, install_signals=False)

    asyncio.run(run())
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"], row["attempts"]) == ("queued", "budget_reached", 0)
    assert sim.submissions == []
    assert users.usage(user) == 1, "the user's quota is untouched by the budget"
    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(null)")
    asyncio.run(run())
    row = users.job(job["id"])
    assert (row["status"], users.internals(job["id"])["estimated_cost_usd"]) == ("completed", Decimal("0.2800"))


def committed_today(db) -> Decimal:
    with db.connect() as conn:
        rows = service(conn, "select coalesce(sum(committed_usd), 0) as usd from public.get_video_spend(1)")
    return Decimal(rows[0]["usd"])


async def test_a_submission_that_certainly_started_nothing_gives_its_reservation_back(users, db, settings_for):

    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(100)")
    user, path = users.user_with_image()
    job = users.request(user, path)
    nobody_listens = f"http://127.0.0.1:{free_port()}"  # every connection refused: no request ever sent
    async with running(settings_for(providers="fal", fal_queue_url=nobody_listens, submit_attempts=2)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    assert (users.job(job["id"])["status"], users.job(job["id"])["waiting_reason"]) == (
        "queued",
        "providers_unavailable",
    )
    assert committed_today(db) == 0, "nothing can have been paid, nothing stays reserved"


async def test_a_submission_whose_answer_was_lost_keeps_its_reservation(users, db, sim, settings_for):

    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(100)")
    sim.drop_reply_next("fal.submit")
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="fal")) as app:
        for _ in range(50):  # the job waits a retry's backoff after the lost answer, then goes again
            await app.worker.run(until_idle=True, install_signals=False)
            if users.job(job["id"])["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    row = users.job(job["id"])
    assert (row["status"], row["provider_submissions"]) == ("completed", 2)
    assert len(sim.submissions) == 2
    cost = users.internals(job["id"])["estimated_cost_usd"]
    assert committed_today(db) == 2 * cost, "the lost one may be paid: it stays counted"


def _eventually(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_cancels_timed_during_submission_never_give_a_user_more_paid_tasks_than_units_charged(
    users, db, sim, storage_dir, tmp_path
):
    """The attack: a user cancels while the worker waits for fal's answer, again and again.

    A real worker process, fal answering each submission 0.4 s after it created the
    task, tasks that start at once (so a task canceled after fal's answer has run and is
    paid). The user's daily limit is 2; the day's cap fits three tasks.
    """
    per_job = estimate_cost("fal", "fal-ai/kling-video/v2.1/standard/image-to-video", {})
    sim.queue_seconds, sim.run_seconds = 0.0, 0.5
    sim.submit_answer_delay["fal.submit"] = 0.4
    attacker, path = users.user_with_image()
    victim, victim_path = users.user_with_image()
    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(%s)", (per_job * 3,))
        set_limits(conn, attacker, 2, 2)
    env = {**worker_env(db, sim, storage_dir), "VIDANIM_PROVIDERS": "fal", "VIDANIM_WORKER_ID": "attacked"}
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidanim", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            attempts, refused = 0, None
            for _ in range(8):
                tasks_before, cancels_before = len(sim.tasks), len(sim.cancels)
                try:
                    job = users.request(attacker, path)
                except psycopg.Error as exc:
                    refused = exc.sqlstate
                    break
                attempts += 1
                # fal has created the task and has not answered yet: now
                if not _eventually(lambda n=tasks_before: len(sim.tasks) > n, timeout=10):
                    break  # the job waits (the day's cap is full): the attack has nothing more to time
                with db.connect() as conn, as_user(conn, attacker) as cur:
                    cur.execute("select public.cancel_video_job(%s)", (job["id"],))
                # the worker hears fal's answer, finds the job canceled and cancels the task
                assert _eventually(lambda n=cancels_before: len(sim.cancels) > n), "the task was not canceled"
            paid_by_attacker = len(sim.paid_tasks("fal"))
            victim_job = users.request(victim, victim_path)
            victim_done = _eventually(lambda: users.job(victim_job["id"])["status"] == "completed")
        finally:
            proc.terminate()
            proc.wait(30)
    assert attempts >= 2
    assert refused in (None, "PT429"), refused
    assert paid_by_attacker <= users.usage(attacker), (
        f"{paid_by_attacker} paid tasks for {users.usage(attacker)} quota units charged"
    )
    assert victim_done, f"another user's job did not run under the day's cap: {users.job(victim_job['id'])}"
    assert committed_today(db) <= per_job * 3
