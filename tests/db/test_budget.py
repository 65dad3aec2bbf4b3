"""The daily budget in SQL: reservations under one lock, never past the cap; service role only."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service
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
