"""The worker's /metrics, /healthz and /readyz over real HTTP: every series, with values the test caused."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.db.helpers import service
from tests.worker.conftest import running
from vidanim.worker.metrics import JOB_COUNTS, WorkerMetrics


async def get(url: str) -> httpx.Response:
    """The server runs in this test's event loop: ask it without blocking the loop."""
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await get(f"{url}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_the_metrics_page_holds_every_series_with_the_values_the_jobs_caused(users, settings_for, sim, db):
    with db.connect() as conn:
        service(conn, "select public.set_video_daily_budget(100)")
    user, path = users.user_with_image()
    done = users.request(user, path)
    refused = users.request(user, path, prompt="refuse me")
    sim.outcome_next("fal", "moderate")  # the first task ends moderated
    async with running(settings_for(operator_port=0)) as app:
        await app.worker.run(until_idle=True, install_signals=False)
        later = users.request(user, path)  # queued, not yet claimed
        samples = await scrape(app.operator_url)
    statuses = {users.job(j["id"])["status"] for j in (done, refused)}
    assert statuses == {"completed", "failed"}
    assert value(samples, "vidanim_jobs", status="completed") == 1
    assert value(samples, "vidanim_jobs", status="failed") == 1
    assert value(samples, "vidanim_jobs", status="queued") == 1
    assert value(samples, "vidanim_queue_depth") == 1
    assert value(samples, "vidanim_oldest_queued_job_age_seconds") >= 0
    assert value(samples, "vidanim_leases_held") == 0
    assert value(samples, "vidanim_job_outcomes_total", provider="fal", status="completed", error_code="") == 1
    assert (
        value(samples, "vidanim_job_outcomes_total", provider="fal", status="failed", error_code="content_moderated")
        == 1
    )
    assert value(samples, "vidanim_job_submissions_count") == 2
    assert value(samples, "vidanim_job_submissions_sum") == 2
    assert value(samples, "vidanim_provider_request_seconds_count", provider="fal", call="submit", outcome="ok") == 2
    assert value(samples, "vidanim_provider_request_seconds_count", provider="fal", call="status", outcome="ok") >= 2
    assert value(samples, "vidanim_provider_breaker_state", provider="fal", state="closed") == 1
    assert value(samples, "vidanim_provider_breaker_state", provider="runway", state="open") == 0
    assert value(samples, "vidanim_spend_committed_usd", provider="fal") == 0.56
    assert value(samples, "vidanim_spend_cap_usd") == 100
    assert later["status"] == "queued"


async def test_waiting_jobs_and_open_breakers_show_and_readiness_follows_the_providers(users, settings_for, sim):
    sim.fail_next("fal.submit", 10**6, 401, body={"detail": "No user found for Key ID and Secret"})
    user, path = users.user_with_image()
    users.request(user, path)
    async with running(settings_for(operator_port=0, providers="fal", breaker_open_seconds=600)) as app:
        assert (await get(f"{app.operator_url}/readyz")).status_code == 200
        await app.worker.run(until_idle=True, install_signals=False)
        samples = await scrape(app.operator_url)
        ready = await get(f"{app.operator_url}/readyz")
        alive = await get(f"{app.operator_url}/healthz")
    assert value(samples, "vidanim_provider_breaker_state", provider="fal", state="open") == 1
    assert value(samples, "vidanim_jobs_waiting", reason="providers_unavailable") == 1
    assert (
        value(samples, "vidanim_provider_request_seconds_count", provider="fal", call="submit", outcome="operator") == 1
    )
    assert (ready.status_code, ready.json()["problems"]) == (503, ["no provider is healthy: fal (credentials)"])
    assert (alive.status_code, alive.json()) == (200, {"status": "ok"})


async def test_readiness_needs_the_database(users, settings_for, db):
    async with running(settings_for(operator_port=0)) as app:
        await app.pool.close()  # the database is gone, as far as this worker can tell
        ready = await get(f"{app.operator_url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["problems"][0].startswith("database:")


async def test_a_half_open_breaker_leaves_its_provider_ready(users, settings_for, db):
    with db.connect() as conn:  # fal's breaker is open, due, and one job probes it now
        service(conn, "select * from public.open_video_provider_breaker('fal', 'outage', 'down', 600)")
        conn.execute(
            "update vidanim_private.video_provider_breakers set open_until = now() - interval '1 s'"
            " where provider = 'fal'"
        )
        assert service(conn, "select public.begin_video_provider_probe('fal', gen_random_uuid(), 60) as p")[0]["p"]
    async with running(settings_for(operator_port=0, providers="fal")) as app:
        ready = await get(f"{app.operator_url}/readyz")
    assert (ready.status_code, ready.json()["providers"]) == (200, ["fal"]), "a probe in flight is not an outage"


class CountingDatabase:
    """The worker's database, counting the queue reads made for the metrics page."""

    def __init__(self, db, started=None, release=None):
        self.db, self.reads, self.started, self.release = db, 0, started, release

    async def rows(self, query, params):
        self.reads += 1
        if self.started is not None:
            self.started.set()
            await self.release.wait()
        return await self.db.rows(query, params)

    def __getattr__(self, name):
        return getattr(self.db, name)


async def test_scrapes_within_the_cache_time_share_one_read_and_a_later_one_reads_again(users, settings_for):
    user, path = users.user_with_image()
    async with running(settings_for()) as app:
        counting = CountingDatabase(app.worker.db)
        metrics = WorkerMetrics(["fal"], cache_seconds=3600)
        await metrics.refresh(counting)
        users.request(user, path)
        await metrics.refresh(counting)
        assert counting.reads == 1, "the second scrape served the first one's values"
        assert metrics.jobs.labels("queued")._value.get() == 0
        metrics.cache_seconds = 0  # the values are older than the cache time now
        await metrics.refresh(counting)
        assert counting.reads == 2
        assert metrics.jobs.labels("queued")._value.get() == 1


async def test_concurrent_scrapes_wait_for_one_read(users, settings_for):
    async with running(settings_for()) as app:
        started, release = asyncio.Event(), asyncio.Event()
        counting = CountingDatabase(app.worker.db, started, release)
        metrics = WorkerMetrics(["fal"], cache_seconds=3600)
        scrapes = [asyncio.create_task(metrics.refresh(counting)) for _ in range(5)]
        await asyncio.wait_for(started.wait(), 10)  # the first read is under way, the others wait
        for _ in range(5):
            await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(asyncio.gather(*scrapes), 10)
        assert counting.reads == 1, "five scrapers at once, one read"


def test_the_queue_counts_read_no_ended_job_older_than_a_day(db, users):
    """The scrape's plan touches ended jobs only through the index of recent ends (0040)."""
    with db.connect() as conn:
        conn.execute("set enable_seqscan = off")  # a seq scan would only be chosen on a tiny table; forbid it
        plan = "\n".join(r[0] for r in conn.execute("explain " + JOB_COUNTS).fetchall())
    assert "Seq Scan on video_jobs" not in plan, plan
    assert "video_jobs_ended_idx" in plan, plan


async def test_during_a_database_outage_the_metrics_page_answers_at_once_with_the_last_values_marked_stale(
    users, settings_for, db
):
    import time

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from tests.support.tcp_proxy import TcpProxy

    user, path = users.user_with_image()
    users.request(user, path)
    target = conninfo_to_dict(db.dsn)
    with TcpProxy(str(target["host"]), int(target["port"])) as proxy:
        dsn = make_conninfo(db.dsn, host="127.0.0.1", port=proxy.port)
        async with running(settings_for(database_url=dsn, operator_port=0, metrics_cache_seconds=0)) as app:
            url = app.operator_url
            before = await scrape(url)
            assert value(before, "vidanim_jobs", status="queued") == 1
            assert value(before, "vidanim_metrics_stale") == 0
            proxy.freeze()  # the database accepts and never answers: paused, or its packets dropped
            users.request(user, path)  # written directly: the worker cannot see it
            for _ in range(2):  # the second scrape finds the first one's read still hanging
                started = time.monotonic()
                during = await scrape(url)
                assert time.monotonic() - started < 5, "a scrape during the outage answered within 5 s"
                assert value(during, "vidanim_jobs", status="queued") == 1, "the last values read"
                assert value(during, "vidanim_metrics_stale") == 1
                assert value(during, "vidanim_metrics_age_seconds") >= 2
            proxy.thaw()
            deadline = time.monotonic() + 30
            while value(after := await scrape(url), "vidanim_metrics_stale") == 1:
                assert time.monotonic() < deadline, "fresh values once the database answers again"
                await asyncio.sleep(0.2)
            assert value(after, "vidanim_jobs", status="queued") == 2
            assert value(after, "vidanim_metrics_age_seconds") < 5


class FailingDatabase(CountingDatabase):
    """The worker's database, whose reads fail (as a refused connection does) while `failing` is set."""

    failing = False

    async def rows(self, query, params):
        import psycopg

        if self.failing:
            raise psycopg.OperationalError("connection refused")
        return await super().rows(query, params)


async def test_a_read_that_fails_keeps_the_last_values_marked_stale_with_their_age_since_that_read(users, settings_for):
    async with running(settings_for()) as app:
        db = FailingDatabase(app.worker.db)
        metrics = WorkerMetrics(["fal"], cache_seconds=3600)
        sample = metrics.registry.get_sample_value
        await asyncio.sleep(1.0)  # the worker has run a while before its first read
        await metrics.refresh(db)
        assert sample("vidanim_metrics_stale") == 0
        metrics.cache_seconds = 0
        db.failing = True
        await metrics.refresh(db)
        assert sample("vidanim_metrics_stale") == 1, "a failed read serves the last values, marked stale"
        assert sample("vidanim_metrics_read_failures_total", {"reason": "error"}) == 1
        assert sample("vidanim_metrics_age_seconds") < 1.0, "the age counts from the last good read, not the start"
        metrics.cache_seconds = 3600  # the good read is recent enough to serve: its values are not stale
        await metrics.refresh(db)
        assert sample("vidanim_metrics_stale") == 0
        db.failing = False
        metrics.cache_seconds = 0
        await metrics.refresh(db)
        assert sample("vidanim_metrics_stale") == 0
        assert db.reads == 2
