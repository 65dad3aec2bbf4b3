"""Runway client against the simulator, over real HTTP."""

from __future__ import annotations

import pytest

from tests.providers.conftest import run_to_end
from vidanim.providers import OperatorFault, PermanentProviderError, TaskState, TransientProviderError
from vidanim.providers.runway import API_VERSION, MIN_POLL_INTERVAL, STATUS_MAP, RunwayProvider


async def test_submit_then_poll_to_a_completed_video(runway, sim):
    sub = await runway.submit("https://img.example/a.png", "p" * 1500, {"duration": 10, "ignored": 1})
    status, seen = await run_to_end(runway, sub.task_id)
    assert status.state is TaskState.COMPLETED
    assert seen == ["PENDING", "RUNNING", "SUCCEEDED"]
    ((_, _, body),) = sim.submissions
    assert body["promptImage"] == "https://img.example/a.png"
    assert body["model"] == "gen4_turbo"
    assert body["duration"] == 10
    assert len(body["promptText"]) == 1000
    assert "ignored" not in body


def test_the_status_table_maps_every_documented_status():
    assert {k: v.value for k, v in STATUS_MAP.items()} == {
        "PENDING": "queued",
        "THROTTLED": "queued",
        "RUNNING": "processing",
        "SUCCEEDED": "completed",
        "FAILED": "failed",
        "CANCELLED": "canceled",
    }


def test_polls_are_never_faster_than_runway_asks():
    assert RunwayProvider(api_secret="x", poll_interval=1).poll_interval == MIN_POLL_INTERVAL
    assert API_VERSION == "2024-11-06"


@pytest.mark.parametrize(
    ("fraction", "progress"), [(0, 0), (0.0, 0), (0.5, 50), (1, 100), (1.0, 100), (-0.01, None), (1.01, None)]
)
async def test_runways_progress_fraction_is_read_from_0_to_1_inclusive(runway, sim, fraction, progress):
    sim.fail_next("runway.status", 1, 200, body={"id": "t", "status": "RUNNING", "progress": fraction})
    status = await runway.status("t")
    assert (status.state, status.progress) == (TaskState.PROCESSING, progress)


async def test_safety_failures_are_moderation_with_a_readable_message(runway, sim):
    sim.outcome_next("runway", "moderate")
    sub = await runway.submit("https://img.example/a.png", None, {})
    status, _ = await run_to_end(runway, sub.task_id)
    assert status.state is TaskState.FAILED
    assert status.error_code == "content_moderated"
    assert "content policy" in status.error


async def test_other_failures_do_not_show_runways_internal_text(runway, sim):
    sim.outcome_next("runway", "fail")
    sub = await runway.submit("https://img.example/a.png", None, {})
    status, _ = await run_to_end(runway, sub.task_id)
    assert status.state is TaskState.FAILED
    assert "internal text" not in status.error


@pytest.mark.parametrize("code", [429, 502, 503, 504])
async def test_load_shedding_is_transient(runway, sim, code):
    sim.fail_next("runway.submit", 1, code, retry_after=3)
    with pytest.raises(TransientProviderError) as info:
        await runway.submit("https://img.example/a.png", None, {})
    assert info.value.retry_after == 3


@pytest.mark.parametrize("code", [400, 405])
async def test_client_errors_about_the_request_are_permanent(runway, sim, code):
    sim.fail_next("runway.submit", 1, code)
    with pytest.raises(PermanentProviderError):
        await runway.submit("https://img.example/a.png", None, {})


@pytest.mark.parametrize(
    ("code", "body", "kind"),
    [
        (401, {"error": "Invalid API key"}, "credentials"),
        (403, {"error": "Forbidden"}, "credentials"),
        (402, {"error": "Payment required"}, "credits"),
        (400, {"error": "You do not have enough credits to run this task."}, "credits"),
        (404, {"error": "Model not found"}, "model"),
    ],
)
async def test_account_and_model_faults_are_the_operators_not_the_requests(runway, sim, code, body, kind):
    sim.fail_next("runway.submit", 1, code, body=body)
    with pytest.raises(OperatorFault) as info:
        await runway.submit("https://img.example/a.png", None, {})
    assert (info.value.kind, info.value.status_code) == (kind, code)


async def test_x_should_retry_wins(runway, sim):
    sim.fail_next("runway.submit", 1, 500, headers={"x-should-retry": "false"})
    with pytest.raises(PermanentProviderError):
        await runway.submit("https://img.example/a.png", None, {})


async def test_a_4xx_that_runway_marks_retryable_is_transient(runway, sim):
    sim.fail_next("runway.submit", 1, 400, headers={"x-should-retry": "true"})
    with pytest.raises(TransientProviderError) as info:
        await runway.submit("https://img.example/a.png", None, {})
    assert info.value.status_code == 400


async def test_missing_version_header_is_refused_by_the_simulator(sim):
    import httpx

    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{sim.base_url}/v1/image_to_video",
            headers={"Authorization": f"Bearer {sim.runway_secret}"},
            json={"model": "gen4_turbo", "promptImage": "x"},
        )
    assert r.status_code == 400


async def test_cancel_deletes_the_task(runway, sim):
    sim.queue_seconds = 5
    sub = await runway.submit("https://img.example/a.png", None, {})
    await runway.cancel(sub.task_id)
    assert sim.cancels == [("runway", sub.task_id)]
    assert (await runway.status(sub.task_id)).state is TaskState.CANCELED


async def test_polling_a_finished_task_again_replaces_an_expired_url(runway, sim):
    import httpx

    sim.expire_urls_next(1)
    sub = await runway.submit("https://img.example/a.png", None, {})
    first, _ = await run_to_end(runway, sub.task_id)
    second = await runway.status(sub.task_id)
    async with httpx.AsyncClient() as client:
        assert (await client.get(first.output_url)).status_code == 403
        fresh = await client.get(second.output_url)
    assert fresh.status_code == 200
    assert fresh.headers["content-type"] == "video/mp4"
    assert fresh.content[4:8] == b"ftyp"


async def test_only_the_options_runway_documents_are_sent_in_its_types(runway, sim):
    await runway.submit(
        "https://img.example/a.png", None, {"duration": "10", "seed": 7, "cfg_scale": 0.3, "model": "x"}
    )
    ((_, _, body),) = sim.submissions
    assert (body["duration"], body["seed"], body["model"]) == (10, 7, "gen4_turbo")
    assert "cfg_scale" not in body
