"""Which failures of a submission leave a paid task possible (SubmissionUncertain), for both providers.

A submission whose request went out and whose answer was lost may have started a
task; one that never reached the provider, or a status poll, certainly started none.
"""

from __future__ import annotations

import contextlib
import os
import resource

import httpx
import pytest

from vidanim.ports import free_port
from vidanim.providers import TransientProviderError
from vidanim.providers.base import LocalFault, SubmissionUncertain
from vidanim.providers.fal import FalProvider
from vidanim.providers.runway import RunwayProvider

PROVIDERS = ("fal", "runway")
IMAGE = "https://img.example/a.png"
FAL_MODEL = "fal-ai/kling-video/v2.1/standard/image-to-video"


@contextlib.asynccontextmanager
async def provider(name: str, sim, *, base_url: str | None = None, read_timeout: float = 2.0):
    """The provider `name` against the simulator (or `base_url`), closed afterwards."""
    timeout = httpx.Timeout(read_timeout, connect=1.0)
    url = base_url or sim.base_url
    p: FalProvider | RunwayProvider
    if name == "fal":
        p = FalProvider(key=sim.fal_key, model=FAL_MODEL, base_url=url, poll_interval=0.02, timeout=timeout)
    else:
        p = RunwayProvider(
            api_secret=sim.runway_secret, base_url=url, poll_interval=0.02, enforce_min_interval=False, timeout=timeout
        )
    try:
        yield p
    finally:
        await p.aclose()


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_submission_whose_connection_closes_after_the_task_started_is_uncertain(sim, name):
    sim.drop_reply_next(f"{name}.submit")
    async with provider(name, sim) as p:
        with pytest.raises(SubmissionUncertain) as lost:
            await p.submit(IMAGE, None, {})
    assert lost.value.code == f"{name}_answer_lost"
    assert len(sim.submissions) == 1, "the provider did start (and bill) a task"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_an_accepted_submission_without_a_task_id_is_uncertain(sim, name):
    sim.fail_next(f"{name}.submit", 1, 200, body={"status": "IN_QUEUE"})
    async with provider(name, sim) as p:
        with pytest.raises(SubmissionUncertain) as lost:
            await p.submit(IMAGE, None, {})
    assert lost.value.code == f"{name}_bad_response"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_submission_that_timed_out_reading_its_answer_is_uncertain(sim, name):
    sim.latency = 1.0
    async with provider(name, sim, read_timeout=0.3) as p:
        with pytest.raises(SubmissionUncertain) as lost:
            await p.submit(IMAGE, None, {})
    assert "ReadTimeout" in lost.value.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_status_poll_that_timed_out_is_only_transient(sim, name):
    async with provider(name, sim, read_timeout=0.3) as p:
        task_id = (await p.submit(IMAGE, None, {})).task_id
        sim.latency = 1.0
        with pytest.raises(TransientProviderError) as failed:
            await p.status(task_id)
    assert not isinstance(failed.value, SubmissionUncertain), "a poll starts nothing"
    assert failed.value.code == f"{name}_unreachable"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_submission_that_never_connected_is_only_transient(sim, name):
    async with provider(name, sim, base_url=f"http://127.0.0.1:{free_port()}") as p:
        with pytest.raises(TransientProviderError) as failed:
            await p.submit(IMAGE, None, {})
    assert not isinstance(failed.value, SubmissionUncertain), "nothing reached the provider"
    assert failed.value.code == f"{name}_unreachable"


@contextlib.contextmanager
def no_descriptors_left():
    """This process out of file descriptors (EMFILE), for real: the soft limit at the lowest free one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_submission_this_process_has_no_descriptor_for_is_a_local_fault(sim, name):
    """EMFILE is the worker's own trouble: not the provider's, so no shared breaker may open on it."""
    async with provider(name, sim) as p:
        with no_descriptors_left(), pytest.raises(TransientProviderError) as failed:
            await p.submit(IMAGE, None, {})
    assert isinstance(failed.value, LocalFault), failed.value.message
    assert "EMFILE" in failed.value.message
    assert sim.submissions == [], "nothing reached the provider"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_submission_whose_provider_name_does_not_resolve_here_is_a_local_fault(sim, name):
    """A failed DNS lookup (socket.gaierror) happens on our side: the provider may be fine for every other worker."""
    async with provider(name, sim, base_url="http://provider.invalid") as p:
        with pytest.raises(TransientProviderError) as failed:
            await p.submit(IMAGE, None, {})
    assert isinstance(failed.value, LocalFault), failed.value.message
    assert "name lookup failed" in failed.value.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_refused_connection_is_the_providers_answer_not_a_local_fault(sim, name):
    """Connection refused comes from the provider's address: it counts as theirs (and may open the breaker)."""
    async with provider(name, sim, base_url=f"http://127.0.0.1:{free_port()}") as p:
        with pytest.raises(TransientProviderError) as failed:
            await p.submit(IMAGE, None, {})
    assert not isinstance(failed.value, LocalFault)
    assert failed.value.code == f"{name}_unreachable"
