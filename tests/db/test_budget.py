"""The daily budget in SQL: reservations under one lock, never past the cap; service role only."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tests.db.helpers import claim, job_row, raises_sqlstate, request_job, service, usage
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image, set_limits

RESERVE = "select * from public.reserve_video_spend(%s, %s, %s, %s)"


def _leased_jobs(conn, n: int, worker: str = "w1") -> list[dict]:
    user = create_user(conn)
    set_limits(conn, user, n, n)
    path = put_input_image(conn, user)
    jobs = [request_job(conn, user, path) for _ in range(n)]
    claim(conn, worker, limit=n)
    return jobs


def _committed(conn) -> Decimal:
    return conn.execute("select coalesce(sum(committed_usd), 0) from vidanim_private.video_spend").fetchone()[0]


def test_reservations_stop_at_the_cap_and_releases_give_back(conn):
    jobs = _leased_jobs(conn, 3)
    service(conn, "select public.set_video_daily_budget(0.60)")
    (first,) = service(conn, RESERVE, (jobs[0]["id"], "w1", "fal", Decimal("0.28")))
    (second,) = service(conn, RESERVE, (jobs[1]["id"], "w1", "fal", Decimal("0.28")))
    (third,) = service(conn, RESERVE, (jobs[2]["id"], "w1", "runway", Decimal("0.28")))
    assert [r["reserved"] for r in (first, second, third)] == [True, True, False]
    assert third["committed_usd"] == Decimal("0.56")
    assert _committed(conn) == Decimal("0.56")
    service(conn, "select public.release_video_spend(%s, 'fal', 0.28)", (jobs[1]["id"],))
    assert _committed(conn) == Decimal("0.28")
    (again,) = service(conn, RESERVE, (jobs[2]["id"], "w1", "runway", Decimal("0.28")))
    assert again["reserved"] is True
    spend = service(conn, "select provider, committed_usd, submissions from public.get_video_spend(1)")
    assert spend == [
        {"provider": "fal", "committed_usd": Decimal("0.2800"), "submissions": 1},
        {"provider": "runway", "committed_usd": Decimal("0.2800"), "submissions": 1},
    ]


def test_concurrent_reservations_never_pass_the_cap(db):
    with db.connect() as conn:
        jobs = _leased_jobs(conn, 200)
        service(conn, "select public.set_video_daily_budget(10.00)")
    reserved = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def reserve(chunk) -> None:
        with db.connect() as c:
            barrier.wait()
            for job in chunk:
                (row,) = service(c, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
                with lock:
                    reserved.append(row["reserved"])

    threads = [threading.Thread(target=reserve, args=(jobs[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.connect() as conn:
        assert _committed(conn) == Decimal("9.80") <= Decimal("10.00")
    assert reserved.count(True) == 35


def test_a_reservation_needs_the_jobs_lease(conn):
    (job,) = _leased_jobs(conn, 1)
    with raises_sqlstate("PT409"):
        service(conn, RESERVE, (job["id"], "another-worker", "fal", Decimal("0.28")))


@pytest.mark.parametrize(
    ("query", "params", "message"),
    [
        ("select public.set_video_daily_budget(%s)", (Decimal("-1"),), "daily cap"),
        ("select * from public.get_video_spend(%s)", (0,), "p_days"),
        ("select * from public.get_video_spend(%s)", (400,), "p_days"),
        ("select public.release_video_spend(gen_random_uuid(), 'fal', %s)", (Decimal("-0.01"),), "cost"),
        ("select public.release_video_spend(gen_random_uuid(), 'acme', %s)", (Decimal("0.28"),), "provider"),
    ],
)
def test_budget_functions_refuse_bad_values(conn, query, params, message):
    with raises_sqlstate("22023", message):
        service(conn, query, params)


def test_a_user_cannot_set_or_read_the_budget(conn):
    user = create_user(conn)
    for query in ("select public.set_video_daily_budget(1000000)", "select * from public.get_video_spend(7)"):
        with raises_sqlstate("42501"), as_user(conn, user) as cur:
            cur.execute(query)
    assert service(conn, "select public.get_video_daily_budget() as cap") == [{"cap": None}]


# A cancel during a submission (0033): settled by the worker, never refunded blind --------------

RELEASE = "select public.release_video_spend(%s, %s, %s)"
RECORD = "select public.record_video_job_submission(%s, %s, %s, %s, 'IN_QUEUE') as outcome"
ACQUIRE = "select public.acquire_video_provider_slot(%s, %s, %s) as acquired"


def _user_job(conn, worker: str = "w1") -> tuple[object, dict]:
    user = create_user(conn)
    path = put_input_image(conn, user)
    job = request_job(conn, user, path)
    claim(conn, worker, limit=1)
    return user, job


def _cancel(conn, user, job) -> None:
    with as_user(conn, user) as cur:
        cur.execute("select public.cancel_video_job(%s)", (job["id"],))


def _expire_lease(conn, job) -> None:
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 second' where id = %s", (job["id"],))


def test_a_cancel_before_the_reservation_refunds_at_once_and_the_reservation_is_refused(conn):
    user, job = _user_job(conn)
    _cancel(conn, user, job)
    assert usage(conn, user) == 0
    with raises_sqlstate("PT409"):
        service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    assert _committed(conn) == 0


def test_a_cancel_during_a_submission_keeps_the_unit_until_the_release_gives_both_back(conn):
    user, job = _user_job(conn)
    service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    _cancel(conn, user, job)
    assert job_row(conn, job["id"])["status"] == "canceled", "the cancel is recorded at once"
    assert usage(conn, user) == 1, "the unit waits for what the submission did"
    service(conn, RELEASE, (job["id"], "fal", Decimal("0.28")))  # the provider certainly created nothing
    assert (usage(conn, user), _committed(conn)) == (0, 0)
    assert conn.execute(
        "select estimated_cost_usd from vidanim_private.video_job_internals where job_id = %s", (job["id"],)
    ).fetchone() == (None,)


def test_a_task_created_for_a_job_canceled_during_its_submission_keeps_the_unit_and_the_spend(conn):
    user, job = _user_job(conn)
    service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    _cancel(conn, user, job)
    (row,) = service(conn, RECORD, (job["id"], "w1", "fal", "task-1"))
    assert row["outcome"] == "refused", "the worker must cancel the task"
    service(conn, RELEASE, (job["id"], "fal", Decimal("0.28")))  # a late release finds nothing to give back
    assert (usage(conn, user), _committed(conn)) == (1, Decimal("0.28"))


def test_a_release_gives_back_once(conn):
    _, job = _user_job(conn)
    _, other = _user_job(conn)
    service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    service(conn, RESERVE, (other["id"], "w1", "fal", Decimal("0.28")))
    service(conn, RELEASE, (job["id"], "fal", Decimal("0.28")))
    service(conn, RELEASE, (job["id"], "fal", Decimal("0.28")))
    assert _committed(conn) == Decimal("0.28"), "the second release of one reservation gives nothing back"


def test_a_release_gives_back_to_the_provider_it_was_reserved_at(conn):
    _, fal_job = _user_job(conn)
    _, runway_job = _user_job(conn)
    service(conn, RESERVE, (fal_job["id"], "w1", "fal", Decimal("1.00")))
    service(conn, RESERVE, (runway_job["id"], "w1", "runway", Decimal("0.50")))
    spend = "select provider, committed_usd, submissions from public.get_video_spend(1)"
    service(conn, RELEASE, (runway_job["id"], "fal", Decimal("0.50")))  # not where it was reserved: nothing
    assert service(conn, spend) == [
        {"provider": "fal", "committed_usd": Decimal("1.0000"), "submissions": 1},
        {"provider": "runway", "committed_usd": Decimal("0.5000"), "submissions": 1},
    ]
    service(conn, RELEASE, (fal_job["id"], "fal", Decimal("1.00")))
    assert service(conn, spend) == [
        {"provider": "fal", "committed_usd": Decimal("0.0000"), "submissions": 0},
        {"provider": "runway", "committed_usd": Decimal("0.5000"), "submissions": 1},
    ]


def test_a_cancel_after_the_reserving_worker_lost_its_lease_refunds_at_once(conn):
    user, job = _user_job(conn)
    service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    _expire_lease(conn, job)
    _cancel(conn, user, job)
    assert usage(conn, user) == 0, "no worker holds the job: nobody is left to settle"


@pytest.mark.parametrize("query", [RESERVE, ACQUIRE])
def test_reservations_and_slots_need_an_unexpired_lease_on_a_queued_job(conn, query):
    _, job = _user_job(conn)
    params = (job["id"], "w1", "fal", Decimal("0.28")) if query == RESERVE else (job["id"], "w1", "fal")
    service(conn, "select public.set_video_provider_limit('fal', 5)")
    assert service(conn, query, params), "the lease holder may"
    _expire_lease(conn, job)
    with raises_sqlstate("PT409"):
        service(conn, query, params)


def test_a_release_at_one_provider_leaves_the_others_committed_spend(conn):
    fal_job, runway_job = _leased_jobs(conn, 2)
    service(conn, RESERVE, (fal_job["id"], "w1", "fal", Decimal("0.28")))
    service(conn, RESERVE, (runway_job["id"], "w1", "runway", Decimal("0.50")))
    service(conn, "select public.release_video_spend(%s, 'fal', 0.28)", (fal_job["id"],))
    spend = service(conn, "select provider, committed_usd, submissions from public.get_video_spend(1)")
    assert {r["provider"]: (r["committed_usd"], r["submissions"]) for r in spend} == {
        "fal": (Decimal("0"), 0),
        "runway": (Decimal("0.5000"), 1),
    }, "only fal's reservation is given back"


def test_a_reservation_by_the_holder_of_an_expired_lease_is_refused(conn):
    (job,) = _leased_jobs(conn, 1)
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 s' where id = %s", (job["id"],))
    with raises_sqlstate("PT409"):
        service(conn, RESERVE, (job["id"], "w1", "fal", Decimal("0.28")))
    assert _committed(conn) == 0, "nothing reserved for a job nobody holds"
