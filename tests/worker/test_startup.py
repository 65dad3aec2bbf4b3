"""A worker's start: an outage of every provider opens their breakers and the worker waits; a configuration
no provider accepts refuses to start in one line. Real `vidanim worker` processes, the simulator over HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.db.helpers import service
from tests.support.grant_modes import service_role_scenario
from tests.worker.conftest import running, worker_env
from vidanim.simulator import Simulator
from vidanim.worker.startup import ProvidersRefused, check_providers

# Every route a check or a submission of either provider takes.
PROVIDER_ROUTES = ("fal.submit", "fal.status", "runway.submit", "runway.organization")


def wait_for(
    what: str, condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Until `condition` holds; fails at once if the worker process ends meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            ended = f"the worker exited {proc.returncode}" if proc.returncode is not None else f"not within {timeout} s"
            raise AssertionError(f"{what}: {ended}\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def start_outage(sim: Simulator) -> None:
    for route in PROVIDER_ROUTES:
        sim.fail_next(route, count=100_000, status=503)


@pytest.fixture
def worker_process(db, sim, storage_dir, tmp_path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"worker-{len(procs)}.log"
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vidanim", "worker"],
                env={**worker_env(db, sim, storage_dir), "VIDANIM_LOG_LEVEL": "INFO", **env},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def breaker_states(db) -> dict[str, tuple[str, str | None]]:
    with db.connect() as conn:
        rows = service(conn, "select provider, state, kind from public.get_video_provider_breakers()")
    return {r["provider"]: (r["state"], r["kind"]) for r in rows}


@service_role_scenario
def test_a_worker_started_during_an_outage_of_both_providers_completes_every_job_once_it_ends(
    db, sim, users, worker_process
):
    user, path = users.user_with_image()
    jobs = [users.request(user, path)["id"] for _ in range(10)]
    start_outage(sim)
    proc, log = worker_process(VIDANIM_BREAKER_OPEN_SECONDS="1", VIDANIM_RETRY_BASE_SECONDS="0.01")
    wait_for("the worker starts", lambda: "event=worker.started" in log.read_text(), 30, proc, log)
    assert proc.poll() is None, log.read_text()
    assert breaker_states(db) == {"fal": ("open", "outage"), "runway": ("open", "outage")}
    time.sleep(3)  # the outage lasts: probes fail, nothing is accepted, the worker stays up
    assert proc.poll() is None, log.read_text()
    assert sim.submissions == []
    assert {users.job(j)["status"] for j in jobs} == {"queued"}

    sim.clear_faults()  # the outage ends; nobody restarts the worker
    wait_for(
        "every job completes",
        lambda: all(users.job(j)["status"] == "completed" for j in jobs),
        60,
        proc,
        log,
    )
    assert proc.poll() is None, "the same process did the work"
    submitted = [task_id for _, task_id, _ in sim.submissions]
    assert len(submitted) == 10 == len(set(submitted)), "each job submitted once"
    assert sorted(users.job(j)["provider_task_id"] for j in jobs) == sorted(submitted)
    with db.connect() as conn:
        (spent,) = conn.execute("select sum(submissions) from vidanim_private.video_spend").fetchone()
    assert spent == 10, "each job paid once"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-2000:]


def test_a_worker_whose_every_key_is_refused_refuses_to_start_in_one_line(db, sim, worker_process):
    proc, log = worker_process(VIDANIM_FAL_KEY="wrong", VIDANIM_RUNWAY_API_SECRET="wrong")
    assert proc.wait(30) == 1
    text = log.read_text()
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    assert errors[0].startswith("error: every provider failed its check: provider fal: fal refused our account (401")
    assert "provider runway: runway refused our account (401" in errors[0]
    assert "Traceback" not in text
    assert breaker_states(db) == {}, "a refusal to start opens no breaker"


async def test_a_refused_key_beside_an_outage_starts_and_opens_both_breakers(db, sim, settings_for):
    sim.fail_next("fal.status", count=10, status=503)
    settings = settings_for(runway_api_secret="wrong")
    async with running(settings) as app:
        health = await check_providers(
            app.providers, app.worker.db, worker_id=settings.worker_id, breaker_open_seconds=60
        )
    assert [(h.name, h.ok, h.breaker_kind, h.configuration) for h in health] == [
        ("fal", False, "outage", False),
        ("runway", False, "credentials", True),
    ]
    assert breaker_states(db) == {"fal": ("open", "outage"), "runway": ("open", "credentials")}


async def test_a_check_that_never_answers_counts_as_an_outage(db, sim, settings_for):
    sim.hang_next("runway.organization", seconds=5)
    settings = settings_for(runway_api_secret=sim.runway_secret)
    async with running(settings) as app:
        started = time.monotonic()
        health = await check_providers(
            app.providers, app.worker.db, worker_id=settings.worker_id, breaker_open_seconds=60, timeout=0.5
        )
        assert time.monotonic() - started < 3
    assert {h.name: h.breaker_kind for h in health} == {"fal": None, "runway": "outage"}
    assert "runway did not answer its check within 0.5 s" in [h.detail for h in health]
    assert breaker_states(db) == {"runway": ("open", "outage")}


async def test_every_key_refused_raises_before_any_breaker_opens(db, sim, settings_for):
    settings = settings_for(fal_key="wrong", runway_api_secret="wrong")
    async with running(settings) as app:
        with pytest.raises(ProvidersRefused, match="every provider failed its check"):
            await check_providers(app.providers, app.worker.db, worker_id=settings.worker_id, breaker_open_seconds=60)
    assert breaker_states(db) == {}


class Checked:
    """A provider whose check at start answers `fault` (or accepts the key)."""

    def __init__(self, fault: Exception | None = None):
        self.fault = fault

    async def check_credentials(self) -> str:
        if self.fault is not None:
            raise self.fault
        return "accepted the key"


async def test_an_account_without_credits_at_every_provider_starts_the_worker_and_opens_their_breakers(
    db, settings_for
):
    from vidanim.providers.base import OperatorFault

    settings = settings_for()
    providers = {name: Checked(OperatorFault(f"{name}: no credits", kind="credits")) for name in ("fal", "runway")}
    async with running(settings) as app:
        health = await check_providers(providers, app.worker.db, worker_id=settings.worker_id, breaker_open_seconds=60)
    assert [h.configuration for h in health] == [False, False], "an account's state is no configuration fault"
    assert breaker_states(db) == {"fal": ("open", "credits"), "runway": ("open", "credits")}


async def test_a_check_failing_for_this_hosts_own_trouble_opens_no_breaker(db, settings_for):
    from vidanim.providers.base import LocalFault

    settings = settings_for()
    providers = {"fal": Checked(LocalFault("fal: name does not resolve here")), "runway": Checked()}
    async with running(settings) as app:
        health = await check_providers(providers, app.worker.db, worker_id=settings.worker_id, breaker_open_seconds=60)
    assert {h.name: h.breaker_kind for h in health} == {"fal": None, "runway": None}
    assert not health[0].ok
    assert breaker_states(db) == {}
