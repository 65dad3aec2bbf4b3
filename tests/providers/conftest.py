from __future__ import annotations

import httpx
import pytest

from vidanim.providers.fal import FalProvider
from vidanim.providers.runway import RunwayProvider
from vidanim.simulator import Simulator


@pytest.fixture
def sim():
    with Simulator(queue_seconds=0.05, run_seconds=0.05) as s:
        yield s


@pytest.fixture
async def fal(sim):
    p = FalProvider(
        key=sim.fal_key,
        model="fal-ai/kling-video/v2.1/standard/image-to-video",
        base_url=sim.base_url,
        poll_interval=0.02,
        timeout=httpx.Timeout(2.0, connect=1.0),
    )
    yield p
    await p.aclose()


@pytest.fixture
async def runway(sim):
    p = RunwayProvider(
        api_secret=sim.runway_secret,
        base_url=sim.base_url,
        poll_interval=0.02,
        enforce_min_interval=False,
        timeout=httpx.Timeout(2.0, connect=1.0),
    )
    yield p
    await p.aclose()


async def run_to_end(provider, task_id, *, limit=200):
    import asyncio

    seen = []
    for _ in range(limit):
        status = await provider.status(task_id)
        if not seen or seen[-1] != status.raw_status:
            seen.append(status.raw_status)
        if status.state.value in ("completed", "failed", "canceled"):
            return status, seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"task never ended: {seen}")
