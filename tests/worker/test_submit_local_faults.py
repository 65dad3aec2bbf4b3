"""A worker's own trouble (out of descriptors, its DNS) makes a job wait; it never opens a breaker every worker shares.

The breaker in `vidanim_private.video_provider_breakers` stops every worker from
calling a provider: it must open on what the provider answered (a 503 outlasting the
retries), never on one worker's inability to send the request at all.
"""

from __future__ import annotations

import logging

from tests.worker.conftest import running


def breakers(db) -> list[tuple[str, str, str | None]]:
    with db.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                "select provider, state, kind from vidanim_private.video_provider_breakers order by provider"
            ).fetchall()
        ]


async def run_until_idle(settings) -> None:
    async with running(settings) as app:
        await app.worker.run(until_idle=True, install_signals=False)


async def test_a_provider_name_that_does_not_resolve_here_makes_the_job_wait_and_opens_no_breaker(
    users, settings_for, db, caplog, events
):
    user, path = users.user_with_image()
    job = users.request(user, path)
    await run_until_idle(settings_for(providers="fal", fal_queue_url="http://fal.invalid", submit_attempts=2))

    row = users.job(job["id"])
    assert (row["status"], row["error_code"], row["attempts"]) == ("queued", None, 0), "the job waits, unfailed"
    assert row["waiting_reason"] == "providers_unavailable"
    assert [b for b in breakers(db) if b[1] != "closed"] == [], "no breaker opened for every worker"
    assert events("provider.breaker_opened") == []
    (alert,) = [r for r in caplog.records if getattr(r, "event", None) == "worker.local_fault"]
    assert alert.levelno == logging.ERROR, "the operator is told once, as an error"
    assert "name lookup failed" in alert.getMessage()


async def test_a_provider_503_outlasting_the_retries_still_opens_its_breaker(users, settings_for, sim, db, events):
    sim.fail_next("fal.submit", 10**6, 503)
    user, path = users.user_with_image()
    job = users.request(user, path)
    await run_until_idle(settings_for(providers="fal", submit_attempts=2, breaker_open_seconds=600))

    row = users.job(job["id"])
    assert (row["status"], row["error_code"]) == ("queued", None)
    assert breakers(db) == [("fal", "open", "outage")]
    assert [e["kind"] for e in events("provider.breaker_opened")] == ["outage"]
    assert events("worker.local_fault") == []
