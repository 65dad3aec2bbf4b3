"""The worker honours paused submissions (0051): paused jobs wait unsent and unfailed; a resume lets them run."""

from __future__ import annotations

from tests.db.helpers import service
from tests.worker.conftest import running


async def _run_until_idle(settings) -> None:
    async with running(settings) as app:
        await app.worker.run(until_idle=True, install_signals=False)


async def test_a_job_waits_unsent_while_every_provider_is_paused_and_completes_after_the_resume(
    users, db, sim, settings_for
):
    with db.connect() as conn:
        service(conn, "select public.pause_video_submissions(null, 'test:ops', 'maintenance')")
    user, path = users.user_with_image()
    job = users.request(user, path)
    await _run_until_idle(settings_for(providers="fal,runway"))
    row = users.job(job["id"])
    assert (row["status"], row["waiting_reason"], row["attempts"], row["error_code"]) == (
        "queued",
        "submissions_paused",
        0,
        None,
    )
    assert sim.submissions == []
    with db.connect() as conn:
        assert service(conn, "select public.resume_video_submissions(null, 'test:ops') as woken")[0]["woken"] == 1
    await _run_until_idle(settings_for(providers="fal,runway"))
    assert users.job(job["id"])["status"] == "completed"


async def test_a_job_goes_to_the_next_provider_while_the_first_ones_submissions_are_paused(
    users, db, sim, settings_for
):
    with db.connect() as conn:
        service(conn, "select public.pause_video_submissions('fal', 'test:ops', null)")
    user, path = users.user_with_image()
    job = users.request(user, path)
    await _run_until_idle(settings_for(providers="fal,runway"))
    assert (users.job(job["id"])["status"], users.job(job["id"])["provider"]) == ("completed", "runway")
    assert [s[0] for s in sim.submissions] == ["runway"]
