"""fal.ai queue client against the simulator, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.providers.conftest import run_to_end
from vidanim.providers import OperatorFault, PermanentProviderError, TaskState, TransientProviderError
from vidanim.providers.fal import STATUS_MAP, FalProvider, classify_response


async def test_submit_then_poll_to_a_completed_video(fal, sim):
    sub = await fal.submit("https://img.example/a.png", "wave", {"duration": "5"})
    assert sub.provider == "fal"
    assert sub.raw_status == "IN_QUEUE"
    status, seen = await run_to_end(fal, sub.task_id)
    assert status.state is TaskState.COMPLETED
    assert seen == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert status.output_url.startswith(sim.base_url + "/files/")
    ((provider, task_id, body),) = sim.submissions
    assert (provider, task_id) == ("fal", sub.task_id)
    assert body == {"image_url": "https://img.example/a.png", "prompt": "wave", "duration": "5"}


def test_the_status_table_maps_every_documented_status():
    assert STATUS_MAP["IN_QUEUE"] is TaskState.QUEUED
    assert STATUS_MAP["IN_PROGRESS"] is TaskState.PROCESSING
    assert STATUS_MAP["COMPLETED"] is TaskState.COMPLETED


async def test_a_completed_request_with_an_error_is_a_failure(fal, sim):
    sim.outcome_next("fal", "fail")
    sub = await fal.submit("https://img.example/a.png", None, {})
    status, _ = await run_to_end(fal, sub.task_id)
    assert status.state is TaskState.FAILED
    assert status.error == "The provider could not make this video."


async def test_moderation_fails_with_a_message_a_user_can_read(fal, sim):
    sim.outcome_next("fal", "moderate")
    sub = await fal.submit("https://img.example/a.png", None, {})
    status, _ = await run_to_end(fal, sub.task_id)
    assert status.state is TaskState.FAILED
    assert status.error_code == "content_moderated"
    assert "content policy" in status.error


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504, 408, 409])
async def test_transient_statuses_raise_transient_errors_with_retry_after(fal, sim, code):
    sim.fail_next("fal.submit", 1, code, retry_after=7)
    with pytest.raises(TransientProviderError) as info:
        await fal.submit("https://img.example/a.png", None, {})
    assert info.value.status_code == code
    assert info.value.retry_after == 7
    assert sim.submissions == []


@pytest.mark.parametrize("code", [400, 422])
async def test_client_errors_about_the_request_are_permanent(fal, sim, code):
    sim.fail_next("fal.submit", 1, code, body={"detail": "prompt is not a string"})
    with pytest.raises(PermanentProviderError) as info:
        await fal.submit("https://img.example/a.png", None, {})
    assert info.value.status_code == code


@pytest.mark.parametrize(
    ("code", "detail", "kind"),
    [
        (401, "No user found for Key ID and Secret", "credentials"),
        (403, "Forbidden", "credentials"),
        (403, "User is locked. Reason: Exhausted balance", "credits"),
        (402, "Payment required", "credits"),
        (404, "Application not found", "model"),
    ],
)
async def test_account_and_model_faults_are_the_operators_not_the_requests(fal, sim, code, detail, kind):
    sim.fail_next("fal.submit", 1, code, body={"detail": detail})
    with pytest.raises(OperatorFault) as info:
        await fal.submit("https://img.example/a.png", None, {})
    assert (info.value.kind, info.value.status_code) == (kind, code)
    assert not isinstance(info.value, PermanentProviderError), "it must never fail a user's job"


async def test_x_fal_retryable_overrides_the_status(fal, sim):
    sim.fail_next("fal.submit", 1, 422, headers={"X-Fal-Retryable": "true"})
    with pytest.raises(TransientProviderError):
        await fal.submit("https://img.example/a.png", None, {})
    sim.fail_next("fal.submit", 1, 503, headers={"X-Fal-Retryable": "false"})
    with pytest.raises(PermanentProviderError):
        await fal.submit("https://img.example/a.png", None, {})


async def test_a_user_start_deadline_504_is_permanent():
    response = httpx.Response(504, headers={"X-Fal-Request-Timeout-Type": "user"}, json={"detail": "timeout"})
    assert isinstance(classify_response(response), PermanentProviderError)


async def test_a_wrong_key_is_an_operator_fault_that_never_shows_the_key(sim):
    bad = FalProvider(key="wrong", model="fal-ai/x/y", base_url=sim.base_url)
    with pytest.raises(OperatorFault) as info:
        await bad.submit("https://img.example/a.png", None, {})
    await bad.aclose()
    assert (info.value.status_code, info.value.kind) == (401, "credentials")
    assert "wrong" not in info.value.message


async def test_a_hung_status_call_times_out_as_transient(fal, sim):
    sub = await fal.submit("https://img.example/a.png", None, {})
    sim.hang_next("fal.status", 1, seconds=5)
    with pytest.raises(TransientProviderError, match="timed out"):
        await fal.status(sub.task_id)


async def test_an_unreachable_provider_is_transient():
    p = FalProvider(key="k", model="fal-ai/x/y", base_url="http://127.0.0.1:1")
    with pytest.raises(TransientProviderError, match="could not be reached"):
        await p.submit("https://img.example/a.png", None, {})
    await p.aclose()


async def test_cancel_reaches_the_provider_and_the_task_reports_it(fal, sim):
    sim.queue_seconds = 5
    sub = await fal.submit("https://img.example/a.png", None, {})
    await fal.cancel(sub.task_id)
    assert sim.cancels == [("fal", sub.task_id)]
    status = await fal.status(sub.task_id)
    assert status.state is TaskState.FAILED


async def test_cancel_of_a_finished_task_is_quietly_accepted(fal, sim):
    sub = await fal.submit("https://img.example/a.png", None, {})
    await run_to_end(fal, sub.task_id)
    await fal.cancel(sub.task_id)
    assert sim.cancels == [("fal", sub.task_id)]


async def test_status_and_result_follow_owner_app_without_the_subpath(fal, sim):
    sub = await fal.submit("https://img.example/a.png", None, {})
    await run_to_end(fal, sub.task_id)
    assert sim.requests["fal.status"] >= 1
    assert sim.requests["fal.result"] == 1


async def test_only_the_options_fal_documents_are_sent_in_its_types(fal, sim):
    await fal.submit(
        "https://img.example/a.png", None, {"duration": 10, "seed": 7, "ratio": "960:960", "cfg_scale": 0.3}
    )
    ((_, _, body),) = sim.submissions
    assert {k: body[k] for k in ("duration", "cfg_scale")} == {"duration": "10", "cfg_scale": 0.3}
    assert "seed" not in body
    assert "ratio" not in body
