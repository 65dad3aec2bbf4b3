"""The quota: atomic under load, per-user limits, refunds once, operator controls."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import uuid
from collections import Counter

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status, usage
from tests.support.postgrest import as_anon, as_service, as_user
from tests.support.seed import create_user, put_input_image, set_limits


def _quota(conn, user):
    with as_user(conn, user) as cur:
        cur.execute("select * from public.get_video_quota()")
        row = cur.fetchone()
    assert row is not None
    return dict(row)


def test_get_video_quota_reports_the_callers_own_figures(conn):
    alice, bob = create_user(conn), create_user(conn)
    set_limits(conn, alice, 7, 3)
    request_job(conn, alice, put_input_image(conn, alice))
    request_job(conn, bob, put_input_image(conn, bob))
    request_job(conn, bob, put_input_image(conn, bob, "b.png"))
    q = _quota(conn, alice)
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert q == {
        "daily_limit": 7,
        "used": 1,
        "remaining": 6,
        "max_active_jobs": 3,
        "active_jobs": 1,
        "resets_at": dt.datetime.combine(tomorrow, dt.time(), tzinfo=dt.UTC),
    }
    assert _quota(conn, bob)["used"] == 2


def test_get_video_quota_is_refused_to_anon(conn):
    with raises_sqlstate("42501"), as_anon(conn) as cur:
        cur.execute("select * from public.get_video_quota()")


def test_the_daily_limit_is_enforced_with_its_reset_time(conn):
    alice = create_user(conn)
    set_limits(conn, alice, 2, 100)
    path = put_input_image(conn, alice)
    request_job(conn, alice, path)
    request_job(conn, alice, path)
    with raises_sqlstate("PT429", "daily video quota of 2 reached; it resets at") as info:
        request_job(conn, alice, path)
    detail = json.loads(info.value.diag.message_detail or "{}")
    assert detail["reason"] == "daily_quota"
    assert detail["limit"] == 2
    assert dt.datetime.fromisoformat(detail["resets_at"]) > dt.datetime.now(dt.UTC)
    assert usage(conn, alice) == 2


def test_the_active_jobs_limit_is_enforced_and_frees_up_when_a_job_ends(conn):
    alice = create_user(conn)
    set_limits(conn, alice, 100, 2)
    path = put_input_image(conn, alice)
    first = request_job(conn, alice, path)
    request_job(conn, alice, path)
    with raises_sqlstate("PT429", "too many active video jobs") as info:
        request_job(conn, alice, path)
    assert json.loads(info.value.diag.message_detail or "{}")["reason"] == "active_jobs"
    with as_user(conn, alice) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (first["id"],))
    assert request_job(conn, alice, path)["status"] == "queued"


def test_a_zero_daily_limit_allows_nothing(conn):
    alice = create_user(conn)
    set_limits(conn, alice, 0, 5)
    with raises_sqlstate("PT429"):
        request_job(conn, alice, put_input_image(conn, alice))


def test_defaults_apply_until_an_override_and_again_after_it_is_cleared(conn):
    alice = create_user(conn)
    service(conn, "select public.set_video_quota_defaults(3, 9)")
    assert _quota(conn, alice)["daily_limit"] == 3
    set_limits(conn, alice, 50, None)
    q = _quota(conn, alice)
    assert (q["daily_limit"], q["max_active_jobs"]) == (50, 9)
    set_limits(conn, alice, None, None)
    assert _quota(conn, alice)["daily_limit"] == 3


@pytest.mark.parametrize(
    ("query", "params", "sqlstate"),
    [
        ("select public.set_video_quota_limits(%s, -1, 1)", "user", "22023"),
        ("select public.set_video_quota_limits(%s, 1, -1)", "user", "22023"),
        ("select public.set_video_quota_limits(%s, 1, 1)", "nobody", "PT404"),
        ("select public.set_video_quota_limits(%s, 1, 1)", None, "22023"),
        ("select public.reset_video_quota(%s)", "nobody", "PT404"),
        ("select public.reset_video_quota(%s)", None, "22023"),
        ("select public.set_video_quota_defaults(-1, 1) where %s::text is null", None, "22023"),
        ("select public.set_video_quota_defaults(1, null) where %s::text is null", None, "22023"),
    ],
)
def test_quota_admin_rejects_bad_input(conn, query, params, sqlstate):
    user = create_user(conn)
    arg = {"user": user, "nobody": uuid.uuid4(), None: None}[params]
    with raises_sqlstate(sqlstate), as_service(conn) as cur:
        cur.execute(query, (arg,))


def test_reset_video_quota_gives_today_back_and_leaves_other_days(conn):
    alice = create_user(conn)
    set_limits(conn, alice, 1, 10)
    path = put_input_image(conn, alice)
    request_job(conn, alice, path)
    conn.execute(
        "insert into public.video_quota_usage (user_id, day, used) values (%s, vidanim_private.video_quota_day() - 3, 4)",
        (alice,),
    )
    with raises_sqlstate("PT429"):
        request_job(conn, alice, path)
    service(conn, "select public.reset_video_quota(%s)", (alice,))
    assert request_job(conn, alice, path)["status"] == "queued"
    old = conn.execute(
        "select used from public.video_quota_usage where user_id = %s and day = vidanim_private.video_quota_day() - 3",
        (alice,),
    ).fetchone()
    assert old == (4,)
    three_days_ago = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    service(conn, "select public.reset_video_quota(%s, %s)", (alice, three_days_ago))
    assert usage(conn, alice) == 1


def test_a_failed_job_refunds_its_unit_exactly_once(conn):
    alice = create_user(conn)
    job = request_job(conn, alice, put_input_image(conn, alice))
    assert usage(conn, alice) == 1
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
    failed = update_status(conn, job["id"], "failed", error_code="moderated", error_message="Rejected")
    assert failed["quota_refunded_at"] is not None
    assert usage(conn, alice) == 0
    # Repeating the final status is a no-op, and nothing can move an ended job again.
    update_status(conn, job["id"], "failed")
    with raises_sqlstate("PT409"):
        update_status(conn, job["id"], "canceled")
    assert usage(conn, alice) == 0


def test_a_refund_reached_twice_by_a_path_around_the_state_machine_is_given_once(conn):
    alice = create_user(conn)
    path = put_input_image(conn, alice)
    job = request_job(conn, alice, path)
    request_job(conn, alice, path)
    assert usage(conn, alice) == 2
    claim(conn, "w1", limit=1)
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
    update_status(conn, job["id"], "failed", error_code="moderated", error_message="Rejected")
    assert usage(conn, alice) == 1
    # An operator's repair, a restore or a future migration revives the ended job
    # without the state machine; failing it again must not give a second unit back.
    conn.execute("alter table public.video_jobs disable trigger video_jobs_enforce_transition")
    conn.execute("update public.video_jobs set status = 'processing' where id = %s", (job["id"],))
    conn.execute("alter table public.video_jobs enable trigger video_jobs_enforce_transition")
    update_status(conn, job["id"], "failed", error_code="moderated", error_message="Rejected")
    assert usage(conn, alice) == 1


def test_a_job_failing_after_its_users_quota_was_reset_still_ends_failed(conn):
    alice = create_user(conn)
    job = request_job(conn, alice, put_input_image(conn, alice))
    service(conn, "select public.reset_video_quota(%s)", (alice,))
    assert usage(conn, alice) == 0
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
    failed = update_status(conn, job["id"], "failed", error_code="moderated", error_message="Rejected")
    assert failed["status"] == "failed"
    assert usage(conn, alice) == 0


def test_the_refund_goes_to_the_day_that_was_charged(conn):
    alice = create_user(conn)
    job = request_job(conn, alice, put_input_image(conn, alice))
    # Pretend the job was created yesterday: move its charge there.
    conn.execute("alter table public.video_jobs disable trigger video_jobs_enforce_transition")
    conn.execute(
        "update public.video_jobs set quota_day = vidanim_private.video_quota_day() - 1 where id = %s", (job["id"],)
    )
    conn.execute("alter table public.video_jobs enable trigger video_jobs_enforce_transition")
    conn.execute(
        "update public.video_quota_usage set day = vidanim_private.video_quota_day() - 1 where user_id = %s", (alice,)
    )
    conn.execute(
        "insert into public.video_quota_usage (user_id, day, used) values (%s, vidanim_private.video_quota_day(), 5)",
        (alice,),
    )
    update_status(conn, job["id"], "failed")
    rows = dict(conn.execute("select day, used from public.video_quota_usage where user_id = %s", (alice,)).fetchall())
    today = dt.datetime.now(dt.UTC).date()
    assert rows == {today - dt.timedelta(days=1): 0, today: 5}


def test_canceling_a_queued_job_refunds_but_canceling_a_processing_one_does_not(conn):
    alice = create_user(conn)
    path = put_input_image(conn, alice)
    queued = request_job(conn, alice, path)
    running = request_job(conn, alice, path)
    claim(conn, "w1")
    update_status(conn, running["id"], "processing", provider="runway", provider_task_id="t", worker_id="w1")
    assert usage(conn, alice) == 2
    with as_user(conn, alice) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (queued["id"],))
        cur.execute("select * from public.cancel_video_job(%s)", (running["id"],))
    assert usage(conn, alice) == 1


def test_a_job_retried_after_reaching_a_provider_is_not_refunded_on_cancel(conn):
    alice = create_user(conn)
    job = request_job(conn, alice, put_input_image(conn, alice))
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t", worker_id="w1")
    service(conn, "select * from public.schedule_video_job_retry(%s, 'w1', 0, 'timeout', 'slow')", (job["id"],))
    with as_user(conn, alice) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (job["id"],))
    assert usage(conn, alice) == 1


def test_a_completed_job_is_never_refunded(conn):
    alice = create_user(conn)
    job = request_job(conn, alice, put_input_image(conn, alice))
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t", worker_id="w1")
    conn.execute(
        "insert into storage.objects (bucket_id, name) values ('video-outputs', %s)", (f"{alice}/{job['id']}.mp4",)
    )
    update_status(conn, job["id"], "completed", output_video_path=f"{alice}/{job['id']}.mp4", worker_id="w1")
    assert usage(conn, alice) == 1


@pytest.mark.slow
def test_hundreds_of_parallel_requests_across_users_never_overshoot(db):
    """25 parallel clicks per user, 12 users, limits 10/day and 4 active: exact counts."""
    users_n, clicks, daily, active = 12, 25, 10, 4
    with db.connect() as admin:
        users = [create_user(admin) for _ in range(users_n)]
        paths = {u: put_input_image(admin, u) for u in users}
        for i, u in enumerate(users):
            # Half the users are bound by the daily limit, half by the active-jobs limit.
            set_limits(admin, u, daily if i % 2 else 100, 100 if i % 2 else active)
    work = [u for u in users for _ in range(clicks)]
    random.Random(7).shuffle(work)
    outcomes: Counter[tuple[uuid.UUID, str]] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(32)

    with ConnectionPool(db.dsn, min_size=32, max_size=32, kwargs={"autocommit": True}) as pool:

        def worker(chunk: list[uuid.UUID]) -> None:
            with pool.connection() as c:
                barrier.wait()
                for u in chunk:
                    try:
                        request_job(c, u, paths[u])
                        result = "ok"
                    except psycopg.Error as exc:
                        result = exc.sqlstate or "?"
                    with lock:
                        outcomes[(u, result)] += 1

        chunks = [work[i::32] for i in range(32)]
        threads = [threading.Thread(target=worker, args=(ch,)) for ch in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with db.connect() as admin:
        for i, u in enumerate(users):
            allowed = daily if i % 2 else active
            assert outcomes[(u, "ok")] == allowed, (i, outcomes)
            assert outcomes[(u, "PT429")] == clicks - allowed
            assert usage(admin, u) == allowed
            jobs = admin.execute("select count(*) from public.video_jobs where user_id = %s", (u,)).fetchone()
            assert jobs == (allowed,)
