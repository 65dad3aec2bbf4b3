"""Claiming, leases, renewal and release: each job to one worker at a time."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.seed import create_user, put_input_image, set_limits


def _jobs(conn, n):
    user = create_user(conn)
    set_limits(conn, user, n, n)
    path = put_input_image(conn, user)
    return [request_job(conn, user, path) for _ in range(n)]


def test_claim_leases_due_jobs_oldest_first(conn):
    jobs = _jobs(conn, 3)
    got = claim(conn, "w1", limit=2, lease=60)
    assert [j["id"] for j in got] == [jobs[0]["id"], jobs[1]["id"]]
    assert all(j["locked_by"] == "w1" and j["attempts"] == 1 for j in got)
    assert [j["id"] for j in claim(conn, "w2", limit=5)] == [jobs[2]["id"]]
    assert claim(conn, "w3") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, 60), "worker id"),
        (("a b", 1, 60), "worker id"),
        (("w" * 256, 1, 60), "worker id"),
        ((None, 1, 60), "worker id"),
        (("w", 0, 60), "p_limit"),
        (("w", 1001, 60), "p_limit"),
        (("w", 1, 0), "lease"),
        (("w", 1, 86401), "lease"),
    ],
)
def test_claim_rejects_bad_arguments(conn, args, message):
    with raises_sqlstate("22023", message):
        service(conn, "select * from public.claim_video_jobs(%s, %s, %s)", args)


def test_a_job_whose_worker_died_is_reclaimed_after_its_lease_and_keeps_its_task(conn):
    (job,) = _jobs(conn, 1)
    claim(conn, "w1", lease=1)
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t-1", worker_id="w1")
    assert claim(conn, "w2") == []
    time.sleep(1.2)  # a real lease expiry
    got = claim(conn, "w2")
    assert [j["id"] for j in got] == [job["id"]]
    assert got[0]["status"] == "processing"
    assert got[0]["provider_task_id"] == "t-1"
    assert got[0]["attempts"] == 1, "resuming a submitted task is not a new attempt"
    with raises_sqlstate("PT409"):
        update_status(conn, job["id"], "processing", provider_status="IN_PROGRESS", worker_id="w1")
    assert update_status(conn, job["id"], "processing", provider_status="IN_PROGRESS", worker_id="w2")


def test_renew_extends_held_leases_and_reports_lost_and_canceled_ones(conn):
    a, b, c = _jobs(conn, 3)
    claim(conn, "w1", limit=3, lease=60)
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 s' where id = %s", (b["id"],))
    conn.execute("update public.video_jobs set status = 'canceled', completed_at = now() where id = %s", (c["id"],))
    rows = {
        r["job_id"]: r
        for r in service(
            conn,
            "select * from public.renew_video_job_leases('w1', %s::uuid[], 120)",
            ([a["id"], b["id"], c["id"], uuid.uuid4()],),
        )
    }
    assert rows[a["id"]]["lease_held"] is True
    assert rows[a["id"]]["status"] == "queued"
    assert rows[b["id"]]["lease_held"] is False
    assert rows[c["id"]]["lease_held"] is False
    assert rows[c["id"]]["status"] == "canceled"
    assert len(rows) == 3, "unknown ids are simply absent"


def test_release_hands_jobs_back_at_once_without_using_an_attempt(conn):
    a, b = _jobs(conn, 2)
    claim(conn, "w1", limit=2)
    update_status(conn, b["id"], "processing", provider="fal", provider_task_id="t", worker_id="w1")
    released = service(conn, "select public.release_video_jobs('w1', %s::uuid[]) as n", ([a["id"], b["id"]],))
    assert released == [{"n": 2}]
    again = {j["id"]: j for j in claim(conn, "w2", limit=5)}
    assert set(again) == {a["id"], b["id"]}
    assert again[a["id"]]["attempts"] == 1
    assert again[b["id"]]["provider_task_id"] == "t"


def test_release_ignores_jobs_the_worker_does_not_hold(conn):
    (a,) = _jobs(conn, 1)
    claim(conn, "w1")
    assert service(conn, "select public.release_video_jobs('w2', %s::uuid[]) as n", ([a["id"]],)) == [{"n": 0}]


def test_renew_and_release_reject_bad_arguments(conn):
    with raises_sqlstate("22023"):
        service(conn, "select * from public.renew_video_job_leases('w', null, 60)")
    with raises_sqlstate("22023"):
        service(conn, "select * from public.renew_video_job_leases('w', '{}'::uuid[], 0)")
    with raises_sqlstate("22023"):
        service(conn, "select public.release_video_jobs('', '{}'::uuid[])")
    with raises_sqlstate("22023"):
        service(conn, "select public.release_video_jobs('w', null)")


def test_terminal_jobs_are_never_claimed(conn):
    a, b = _jobs(conn, 2)
    update_status(conn, a["id"], "failed")
    update_status(conn, b["id"], "canceled")
    assert claim(conn, "w1") == []


@pytest.mark.slow
def test_concurrent_workers_claim_each_job_exactly_once(db):
    n_jobs, n_workers = 300, 8
    with db.connect() as admin:
        _jobs(admin, n_jobs)
    seen: Counter[uuid.UUID] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n_workers)

    def worker(name: str) -> None:
        with db.connect() as c:
            barrier.wait()
            while True:
                got = claim(c, name, limit=3, lease=300)
                if not got:
                    return
                with lock:
                    seen.update(j["id"] for j in got)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == n_jobs
    assert set(seen.values()) == {1}


def test_a_job_locked_by_a_slow_transaction_does_not_stall_claims_of_the_others(db):
    with db.connect() as admin:
        jobs = _jobs(admin, 3)
    with db.connect() as holder, db.connect() as worker:
        # Another transaction holds the oldest due job's row lock and does not finish.
        holder.execute("begin")
        holder.execute("select 1 from public.video_jobs where id = %s for update", (jobs[0]["id"],))
        worker.execute("set lock_timeout = '200ms'")
        got = claim(worker, "w1", limit=10)
        holder.execute("rollback")
    assert [j["id"] for j in got] == [jobs[1]["id"], jobs[2]["id"]]


def test_a_deferred_job_keeps_its_status_and_task_and_waits_saying_why(conn):
    (job,) = _jobs(conn, 1)
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
    (deferred,) = service(
        conn, "select * from public.defer_video_job(%s, %s, %s, %s)", (job["id"], "w1", 60, "storage_unavailable")
    )
    assert (deferred["status"], deferred["provider_task_id"], deferred["attempts"]) == ("processing", "t1", 1)
    assert (deferred["locked_by"], deferred["waiting_reason"]) == (None, "storage_unavailable")
    assert claim(conn, "w2") == [], "not due before the delay"
    conn.execute("update public.video_jobs set next_attempt_at = now() where id = %s", (job["id"],))
    (again,) = claim(conn, "w2")
    assert (again["provider_task_id"], again["waiting_reason"]) == ("t1", "storage_unavailable")
    done = update_status(conn, job["id"], "processing", provider_status="IN_PROGRESS", worker_id="w2")
    assert done["waiting_reason"] is None, "moving on clears the reason"


def test_a_queued_job_deferred_before_submission_gets_its_attempt_back(conn):
    (job,) = _jobs(conn, 1)
    (claimed,) = claim(conn, "w1")
    assert claimed["attempts"] == 1
    (deferred,) = service(
        conn, "select * from public.defer_video_job(%s, %s, %s, %s)", (job["id"], "w1", 0, "storage_unavailable")
    )
    assert (deferred["status"], deferred["attempts"]) == ("queued", 0)


@pytest.mark.parametrize(
    ("worker", "delay", "reason", "sqlstate"),
    [("other", 10, "storage_unavailable", "PT409"), ("w1", -1, "x", "22023"), ("w1", 10, "Not A Code!", "22023")],
)
def test_defer_needs_the_lease_a_sane_delay_and_a_reason_code(conn, worker, delay, reason, sqlstate):
    (job,) = _jobs(conn, 1)
    claim(conn, "w1")
    with raises_sqlstate(sqlstate):
        service(conn, "select * from public.defer_video_job(%s, %s, %s, %s)", (job["id"], worker, delay, reason))
