"""Operator faults never land on users: a wrong key, no credits, an outage; several workers, one breaker.

Each scenario runs three workers at once against the provider simulator and a real
PostgreSQL: while the fault lasts every job waits in `queued`, unfailed, with no
attempt spent; the operator is alerted once per provider, not once per job; once
the fault is fixed, every job completes with exactly one paid submission.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest

from tests.db.helpers import service
from tests.support import images
from tests.support.grant_modes import service_role_scenario
from tests.worker.conftest import running

JOBS = 24
WORKERS = 3


async def run_workers(settings_for, n: int = WORKERS, **overrides) -> None:
    """`n` workers at once, each until nothing is due or running."""

    async def one() -> None:
        async with running(settings_for(**overrides)) as app:
            await app.worker.run(until_idle=True, install_signals=False)

    await asyncio.gather(*(one() for _ in range(n)))


async def run_workers_until_done(users, jobs, settings_for, n: int = WORKERS, timeout: float = 30, **overrides):
    """`n` long-running workers (as in production), stopped once every job ended."""
    async with contextlib.AsyncExitStack() as stack:
        apps = [await stack.enter_async_context(running(settings_for(**overrides))) for _ in range(n)]
        tasks = [asyncio.create_task(app.worker.run(install_signals=False)) for app in apps]
        deadline = asyncio.get_running_loop().time() + timeout
        while waiting := [
            r for r in map(users.job, (j["id"] for j in jobs)) if r["status"] in ("queued", "processing")
        ]:
            late = [(r["status"], r["waiting_reason"], r["next_attempt_at"], r["locked_by"]) for r in waiting]
            assert asyncio.get_running_loop().time() < deadline, f"jobs still waiting after the fix: {late}"
            await asyncio.sleep(0.2)
        for app in apps:
            app.worker.stop()
        await asyncio.gather(*tasks)


def queue_jobs(users, n: int = JOBS) -> list[dict]:
    jobs = []
    for _ in range(n // 4):
        user, path = users.user_with_image()
        jobs += [users.request(user, path) for _ in range(4)]
    return jobs


def assert_each_paid_once(users, jobs, sim) -> None:
    rows = [users.job(j["id"]) for j in jobs]
    assert Counter(r["status"] for r in rows) == {"completed": len(jobs)}
    assert all(r["waiting_reason"] is None for r in rows)
    paid = Counter((provider, task) for provider, task, _ in sim.submissions)
    assert len(sim.submissions) == len(jobs), "one paid submission per job, none more"
    assert {(r["provider"], r["provider_task_id"]) for r in rows} == set(paid)


FAULTS = {
    "wrong-key": ((401, {"detail": "No user found for Key ID and Secret"}), (401, {"error": "Invalid API key"})),
    "no-credits": (
        (403, {"detail": "User is locked. Reason: Exhausted balance"}),
        (402, {"error": "Payment required"}),
    ),
}


@service_role_scenario
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_an_account_fault_on_both_providers_fails_no_job_and_a_restart_after_the_fix_runs_each_once(
    users, settings_for, sim, events, db, fault
):
    (fal_status, fal_body), (runway_status, runway_body) = FAULTS[fault]
    sim.fail_next("fal.submit", 10**6, fal_status, body=fal_body)
    sim.fail_next("runway.submit", 10**6, runway_status, body=runway_body)
    jobs = queue_jobs(users)
    await run_workers(settings_for, breaker_open_seconds=600)

    rows = [users.job(j["id"]) for j in jobs]
    assert {(r["status"], r["waiting_reason"], r["attempts"], r["error_code"]) for r in rows} == {
        ("queued", "providers_unavailable", 0, None)
    }
    assert sim.submissions == [], "nothing was paid"
    assert all(users.usage(r["user_id"]) == 4 for r in rows), "charged once, never refunded"
    opened = events("provider.breaker_opened")
    assert sorted(e["provider"] for e in opened) == ["fal", "runway"], "one alert per provider, not per job"
    kind = "credentials" if fault == "wrong-key" else "credits"
    assert {e["kind"] for e in opened} == {kind}
    with db.connect() as conn:
        states = conn.execute("select provider, state, kind from vidanim_private.video_provider_breakers").fetchall()
    assert sorted(states) == [("fal", "open", kind), ("runway", "open", kind)]

    sim.clear_faults()  # the operator fixed the key / paid the bill ...
    await run_workers_until_done(users, jobs, settings_for, breaker_open_seconds=600)  # ... and restarted the workers
    assert_each_paid_once(users, jobs, sim)
    closed = [e["provider"] for e in events("provider.breaker_closed")]
    assert "fal" in closed
    assert len(closed) == len(set(closed)), "each breaker closed once, by one probe"


@service_role_scenario
async def test_an_outage_of_both_providers_waits_it_out_and_then_runs_each_job_once(users, settings_for, sim, events):
    sim.fail_next("fal.submit", 10**6, 503)
    sim.fail_next("runway.submit", 10**6, 502)
    jobs = queue_jobs(users)
    # The outage, in compressed time: breakers open for a second each time, jobs keep waiting.
    settings = {"breaker_open_seconds": 0.5, "submit_attempts": 2}
    for _ in range(3):
        await run_workers(settings_for, **settings)
        rows = [users.job(j["id"]) for j in jobs]
        assert {(r["status"], r["error_code"]) for r in rows} == {("queued", None)}
        assert max(r["attempts"] for r in rows) == 0
        await asyncio.sleep(0.6)
    assert sim.submissions == []
    assert [e["kind"] for e in events("provider.breaker_opened")] == ["outage", "outage"]
    assert events("provider.probe_failed"), "half-open probes found the outage still on"

    sim.clear_faults()  # the outage ends; no restart needed: the next probe closes the breaker
    await asyncio.sleep(0.6)
    await run_workers_until_done(users, jobs, settings_for, **settings)
    assert_each_paid_once(users, jobs, sim)


@service_role_scenario
async def test_while_one_job_probes_a_half_open_provider_the_others_wait(users, settings_for, sim, events, db):
    sim.fail_next("fal.submit", 10**6, 401)
    jobs = queue_jobs(users, 8)
    await run_workers(settings_for, n=1, providers="fal", breaker_open_seconds=0.2)
    assert {users.job(j["id"])["status"] for j in jobs} == {"queued"}
    sim.clear_faults()
    sim.latency = 0.5  # the probe's submission takes a while; the others must not pile in
    await asyncio.sleep(0.3)
    await run_workers_until_done(users, jobs, settings_for, n=2, providers="fal", breaker_open_seconds=0.2)
    assert_each_paid_once(users, jobs, sim)
    probes = events("provider.probe")
    assert len(probes) == 1, "exactly one job probed"


@service_role_scenario
async def test_a_provider_cap_holds_across_every_worker_and_every_job_still_completes(users, settings_for, sim, db):
    sim.run_seconds = 0.3
    jobs = queue_jobs(users, 12)
    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            with db.connect() as conn:
                (n,) = conn.execute(
                    "select count(*) from public.video_jobs where status = 'processing' and provider = 'runway'"
                ).fetchone()
            peak = max(peak, n)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    await run_workers_until_done(
        users,
        jobs,
        settings_for,
        providers="runway",
        provider_max_in_flight={"runway": 2},
        provider_busy_wait_seconds=0.1,
    )
    sampling = False
    await sampler
    assert peak == 2, f"at most 2 runway tasks in flight at once, and the cap was used (peak {peak})"
    assert_each_paid_once(users, jobs, sim)


def due_for_a_probe(db, provider: str) -> None:
    """The provider's breaker is open and its time is up: the next job that needs it probes it."""
    with db.connect() as conn:
        service(conn, "select * from public.open_video_provider_breaker(%s, 'outage', 'down', 600)", (provider,))
        conn.execute(
            "update vidanim_private.video_provider_breakers set open_until = now() - interval '1 s'"
            " where provider = %s",
            (provider,),
        )


async def test_a_job_bound_for_a_healthy_provider_leaves_another_providers_probe_alone(users, settings_for, db):
    due_for_a_probe(db, "runway")  # Runway is down and due for a probe; fal, first in order, is healthy
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for()) as app:
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 20)
    row = users.job(job["id"])
    assert (row["status"], row["provider"]) == ("completed", "fal")
    with db.connect() as conn:
        runway = conn.execute(
            "select state, probe_job_id from vidanim_private.video_provider_breakers where provider = 'runway'"
        ).fetchone()
    assert runway == ("open", None), "Runway's one probe slot is left for a job that needs Runway"


async def test_while_another_jobs_probe_is_in_flight_a_job_is_not_sent_to_that_provider(users, settings_for, sim, db):
    due_for_a_probe(db, "fal")
    with db.connect() as conn:  # another job (another worker's) probes fal right now
        assert service(conn, "select public.begin_video_provider_probe('fal', gen_random_uuid(), 60) as p")[0]["p"]
    user, path = users.user_with_image()
    job = users.request(user, path)
    async with running(settings_for(providers="fal")) as app:
        await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 20)
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"]) == ("queued", "providers_unavailable")
    assert sim.submissions == [], "one probe at a time: the job waits for its verdict"


RUNWAY_REFUSES_IMAGE = {
    "error": "Invalid input",
    "issues": [{"path": ["promptImage"], "message": "Image aspect ratio is out of range"}],
}


@pytest.mark.parametrize("order", ["fal,runway", "runway,fal"])
async def test_a_refusal_elsewhere_while_a_provider_that_takes_the_image_is_at_its_cap_waits_for_that_provider(
    users, settings_for, sim, order
):
    user, path = users.user_with_image()  # 640x480: within fal's documented limits
    job = users.request(user, path)
    sim.fail_next("runway.submit", 2, 400, body=RUNWAY_REFUSES_IMAGE)
    busy = {"providers": order, "provider_max_in_flight": {"fal": 0}, "provider_busy_wait_seconds": 0.2}
    async with running(settings_for(**busy)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"], row["attempts"]) == ("queued", "provider_busy", 0), row
    assert sim.requests["runway.submit"] == 1
    await asyncio.sleep(0.3)  # due again
    async with running(settings_for(**{**busy, "provider_max_in_flight": {"fal": 1}})) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["provider"]) == ("completed", "fal")
    assert [s[0] for s in sim.submissions] == ["fal"], "paid once, where the image is taken"
    assert users.usage(user) == 1


async def test_a_refusal_elsewhere_while_a_provider_that_would_not_take_the_image_is_at_its_cap_fails_the_job(
    users, settings_for, sim
):
    user, path = users.user_with_image(images.png(1300, 500))  # aspect 2.6: beyond fal's documented 2.5
    job = users.request(user, path)
    sim.fail_next("runway.submit", 1, 400, body=RUNWAY_REFUSES_IMAGE)
    async with running(settings_for(providers="fal,runway", provider_max_in_flight={"fal": 0})) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "input_refused"), row
    assert "(Image aspect ratio is out of range)" in row["error_message"]
    assert sim.submissions == []
    assert users.usage(user) == 0


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"detail": "num_frames must be at most 121"}, ("queued", "provider_busy", None)),
        (
            {"detail": [{"loc": ["body", "image_url"], "msg": "nsfw", "type": "content_policy_violation"}]},
            ("failed", None, "content_moderated"),
        ),
    ],
    ids=["refused", "moderated"],
)
async def test_a_refusal_at_fal_while_runway_is_at_its_cap_waits_unless_the_content_was_refused_as_against_a_policy(
    users, settings_for, sim, body, outcome
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    sim.fail_next("fal.submit", 1, 422 if isinstance(body["detail"], list) else 400, body=body)
    busy = {"providers": "fal,runway", "provider_max_in_flight": {"runway": 0}, "provider_busy_wait_seconds": 30}
    async with running(settings_for(**busy)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"], row["error_code"]) == outcome, row
    assert sim.requests["fal.submit"] == 1, "moderated content is not sent again while it waits"
    assert sim.submissions == []
