"""Progress a user can watch: Runway's progress and fal's queue position, written when they change, at most once a second."""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from rich.console import Console

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.seed import create_user, put_input_image
from tests.worker.conftest import running
from vidanim.client.client import JobView
from vidanim.commands.animate import LiveProgress, progress_line
from vidanim.jobs import Job
from vidanim.providers.fal import FalProvider
from vidanim.providers.runway import RunwayProvider
from vidanim.worker.follow import StatusFeed

PROGRESS = "select public.service_update_video_job_progress(%s, %s, %s, %s) as changed"


def recorded_progress_writes(app) -> list[tuple[int | None, int | None]]:
    """The (progress, queue_position) pairs the worker writes, in order, each still written."""
    writes: list[tuple[int | None, int | None]] = []
    original = app.worker.pipeline.db.update_progress

    async def counted(*args):
        writes.append(args[2:])
        return await original(*args)

    app.worker.pipeline.db.update_progress = counted
    return writes


@pytest.mark.parametrize(("provider", "column"), [("runway", "progress"), ("fal", "queue_position")])
async def test_the_providers_progress_reaches_the_job_as_it_moves_and_no_faster_than_once_a_second(
    users, settings_for, sim, provider, column
):
    sim.queue_seconds, sim.run_seconds = (0.05, 2.5) if provider == "runway" else (2.5, 0.05)
    user, path = users.user_with_image()
    job = users.request(user, path)
    seen: list[int] = []
    async with running(settings_for(providers=provider)) as app:
        writes = recorded_progress_writes(app)
        runner = asyncio.create_task(app.worker.run(until_idle=True, install_signals=False))
        while not runner.done():
            value = users.job(job["id"])[column]
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
            await asyncio.sleep(0.05)
        await runner
    assert users.job(job["id"])["status"] == "completed"
    assert len(seen) >= 2, f"the user saw it move: {seen}"
    assert seen == (sorted(seen) if column == "progress" else sorted(seen, reverse=True))
    assert 2 <= len(writes) <= 4, f"at most one write a second over 2.5 s: {writes}"
    assert len(users.timeline(job["id"])) <= 5, "progress does not grow the timeline"


async def test_a_place_in_the_queue_seen_again_after_another_status_is_written_again(users, settings_for, sim):
    """fal puts a request back in its queue (IN_PROGRESS, then IN_QUEUE at the same place): the status change
    cleared the place (0032), so the same place is written again at once, not taken for one already shown."""
    queued = {"status": "IN_QUEUE", "queue_position": 4}
    sim.fail_next("fal.status", 1, 202, body=queued)
    sim.fail_next("fal.status", 1, 202, body={"status": "IN_PROGRESS", "logs": []})
    sim.fail_next("fal.status", 20, 202, body=queued)
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="fal")) as app:
        writes = recorded_progress_writes(app)
        await app.worker.run(until_idle=True, install_signals=False)
    assert users.job(job["id"])["status"] == "completed"
    assert [s for s, _ in users.timeline(job["id"])].count("processing") >= 3
    assert writes.count((None, 4)) == 2, f"before and after IN_PROGRESS: {writes}"


@pytest.mark.parametrize("provider", ["fal", "runway"])
async def test_polls_slow_down_to_twice_the_providers_interval_and_never_further(provider):
    chosen = (
        FalProvider(key="k", model="fal-ai/kling", poll_interval=1.0)
        if provider == "fal"
        else RunwayProvider(api_secret="s", poll_interval=1.0, enforce_min_interval=False)
    )
    try:
        feed = StatusFeed(chosen, chosen.poll_interval)
        gaps = []
        for _ in range(12):
            before = time.monotonic()
            feed.answered()
            gaps.append(round(feed.next_poll - before, 2))
        assert gaps[:3] == [1.0, 1.25, 1.56], "the cadence grows by POLL_GROWTH"
        assert max(gaps) == gaps[-1] == 2.0, f"reached, never passed: {gaps}"
    finally:
        await chosen.aclose()


def test_progress_is_written_only_by_the_lease_holder_only_when_it_changes_and_in_bounds(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="runway", provider_task_id="t", worker_id="w1")
    assert service(conn, PROGRESS, (job["id"], "w1", 40, None))[0]["changed"] is True
    assert service(conn, PROGRESS, (job["id"], "w1", 40, None))[0]["changed"] is False
    assert service(conn, PROGRESS, (job["id"], "w2", 60, None))[0]["changed"] is False, "not the lease holder"
    for bad in ((101, None), (-1, None), (None, -3)):
        with raises_sqlstate("22023"):
            service(conn, PROGRESS, (job["id"], "w1", *bad))
    row = conn.execute("select progress, queue_position from public.video_jobs where id = %s", (job["id"],)).fetchone()
    assert row == (40, None)


def test_a_new_provider_status_clears_the_progress_read_with_the_old_one(conn):
    """A watcher never sees a new status with the old place in the queue (0032)."""
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    update_status(
        conn, job["id"], "processing", provider="fal", provider_task_id="t", provider_status="IN_QUEUE", worker_id="w1"
    )
    service(conn, PROGRESS, (job["id"], "w1", None, 5))
    update_status(conn, job["id"], "processing", worker_id="w1")  # no new provider status: the place stays
    place = "select provider_status, progress, queue_position from public.video_jobs where id = %s"
    assert conn.execute(place, (job["id"],)).fetchone() == ("IN_QUEUE", None, 5)
    update_status(conn, job["id"], "processing", provider_status="IN_PROGRESS", worker_id="w1")
    assert conn.execute(place, (job["id"],)).fetchone() == ("IN_PROGRESS", None, None)
    service(conn, PROGRESS, (job["id"], "w1", 30, None))
    with conn.transaction():  # one statement setting both keeps what it sets
        conn.execute(
            "update public.video_jobs set provider_status = 'RUNNING', progress = 35 where id = %s", (job["id"],)
        )
    assert conn.execute(place, (job["id"],)).fetchone() == ("RUNNING", 35, None)


def _view(**values) -> JobView:
    base = {f: None for f in Job.__dataclass_fields__}
    base.update(status="processing", provider="runway", provider_status="RUNNING", options={}, attempts=1)
    base.update(values)
    return JobView(Job(**base))


def test_animate_wait_draws_a_bar_for_progress_and_names_the_queue_place():
    assert progress_line(_view(progress=45)) == "  processing [runway: RUNNING] █████████░░░░░░░░░░░  45%"
    assert progress_line(_view(provider="fal", provider_status="IN_QUEUE", queue_position=3)) == (
        "  processing [fal: IN_QUEUE] (place 3 in the provider's queue)"
    )
    assert progress_line(_view(status="completed", provider_status="SUCCEEDED", progress=90)) == (
        "  completed [runway: SUCCEEDED]"
    )


def test_animate_wait_on_a_terminal_follows_the_job_with_one_rich_bar():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with LiveProgress(console) as live:
        live.show(_view(provider="fal", provider_status="IN_QUEUE", queue_position=3))
        queued = live.progress.tasks[0]
        assert (queued.total, queued.description) == (
            None,
            "processing [fal: IN_QUEUE] (place 3 in the provider's queue)",
        )
        live.show(_view(progress=45))
        running = live.progress.tasks[0]
        assert (running.total, running.completed) == (100, 45)
        live.show(_view(status="completed", provider_status="SUCCEEDED", progress=90))
        assert live.progress.tasks[0].completed == 100, "full at completed"
    text = out.getvalue()
    assert "completed [runway: SUCCEEDED]" in text
    assert "100%" in text
    assert "━" in text, "a drawn bar"


def test_progress_from_a_worker_whose_lease_expired_is_not_written(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="runway", provider_task_id="t", worker_id="w1")
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 s' where id = %s", (job["id"],))
    assert service(conn, PROGRESS, (job["id"], "w1", 40, None))[0]["changed"] is False, "the lease ran out"
    row = conn.execute("select progress, queue_position from public.video_jobs where id = %s", (job["id"],)).fetchone()
    assert row == (None, None)


def test_progress_does_not_land_on_a_queued_job_even_from_its_lease_holder(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")  # leased, still queued: no provider has it yet (a retry looks the same)
    assert service(conn, PROGRESS, (job["id"], "w1", None, 4))[0]["changed"] is False
    row = conn.execute(
        "select status, locked_by, progress, queue_position from public.video_jobs where id = %s", (job["id"],)
    ).fetchone()
    assert row == ("queued", "w1", None, None)
