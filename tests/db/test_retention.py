"""Retention (0041): ended jobs pruned in batches, stored videos kept, daily totals exact."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.seed import create_user, put_input_image, put_object, set_limits

PRUNE = "select * from public.prune_video_jobs(%s::interval, %s)"
TOTALS = "select * from public.get_video_job_daily_totals('2000-01-01')"
NO_TRANSITIONS = "alter table public.video_jobs {} trigger video_jobs_enforce_transition"


def make_jobs(conn, n: int) -> tuple[object, list[dict]]:
    user = create_user(conn)
    set_limits(conn, user, 1000, 1000)
    return user, [request_job(conn, user, put_input_image(conn, user, f"{i}.png")) for i in range(n)]


def end(conn, job_id, status: str, *, provider: str = "fal", error_code: str | None = None) -> None:
    """Take the job through the worker's API to `status` (a completed job's video stored)."""
    worker = f"w-{job_id}"
    conn.execute("update public.video_jobs set next_attempt_at = now() - interval '1 year' where id = %s", (job_id,))
    service(conn, "select * from public.claim_video_jobs(%s, 1, 300)", (worker,))
    if status == "canceled":
        conn.execute(NO_TRANSITIONS.format("disable"))
        conn.execute("update public.video_jobs set status = 'canceled', completed_at = now() where id = %s", (job_id,))
        conn.execute(NO_TRANSITIONS.format("enable"))
        return
    update_status(conn, job_id, "processing", provider=provider, provider_task_id=f"t-{job_id}", worker_id=worker)
    if status == "completed":
        path = conn.execute(
            "select user_id::text || '/' || id::text || '.mp4' from public.video_jobs where id = %s", (job_id,)
        ).fetchone()[0]
        put_object(conn, "video-outputs", path, mimetype="video/mp4")
        update_status(conn, job_id, "completed", output_video_path=path, worker_id=worker)
    else:
        update_status(conn, job_id, "failed", error_code=error_code, error_message="no", worker_id=worker)


def age(conn, job_id, days: float, *, ran_seconds: float | None = None, expired: bool = True) -> None:
    """The job ended `days` ago (after running `ran_seconds`); a completed one's video expired unless told."""
    conn.execute(NO_TRANSITIONS.format("disable"))
    conn.execute(
        "update public.video_jobs set completed_at = now() - make_interval(secs => %(d)s * 86400),"
        " created_at = now() - make_interval(secs => %(d)s * 86400 + 600),"
        " started_at = case when %(r)s::float8 is null then started_at"
        "   else now() - make_interval(secs => %(d)s * 86400 + %(r)s) end,"
        " output_video_path = case when status = 'completed' and %(x)s then null else output_video_path end,"
        " output_expired_at = case when status = 'completed' and %(x)s then now() else output_expired_at end"
        " where id = %(id)s",
        {"d": days, "r": ran_seconds, "x": expired, "id": job_id},
    )
    conn.execute(NO_TRANSITIONS.format("enable"))


def remaining(conn, ids) -> set:
    rows = conn.execute("select id from public.video_jobs where id = any(%s)", (list(ids),)).fetchall()
    return {r[0] for r in rows}


def prune(conn, older_than: str = "90 days", batch: int = 1000) -> tuple[int, int]:
    (row,) = service(conn, PRUNE, (older_than, batch))
    return int(row["jobs"]), int(row["events"])


def test_prune_deletes_ended_jobs_in_batches_of_the_given_size_with_their_events(conn):
    _, jobs = make_jobs(conn, 5)
    for job in jobs:
        end(conn, job["id"], "failed", error_code="provider_error")
        age(conn, job["id"], 100)
    (events,) = conn.execute(
        "select count(*) from public.video_job_events where job_id = any(%s)", ([j["id"] for j in jobs],)
    ).fetchone()
    assert events >= 15, "each job has its timeline"
    batches = [prune(conn, batch=2) for _ in range(4)]
    assert [b[0] for b in batches] == [2, 2, 1, 0]
    assert sum(b[1] for b in batches) == events
    assert remaining(conn, [j["id"] for j in jobs]) == set()
    (left,) = conn.execute(
        "select count(*) from public.video_job_events where job_id = any(%s)", ([j["id"] for j in jobs],)
    ).fetchone()
    assert left == 0


def test_a_completed_job_whose_video_is_still_stored_is_never_pruned(conn):
    _, (stored, expired) = make_jobs(conn, 2)
    for job, was_expired in ((stored, False), (expired, True)):
        end(conn, job["id"], "completed")
        age(conn, job["id"], 400, ran_seconds=30, expired=was_expired)
    assert prune(conn)[0] == 1
    assert remaining(conn, [stored["id"], expired["id"]]) == {stored["id"]}, "the one whose video expired goes"


def test_only_ended_jobs_older_than_the_cutoff_are_pruned(conn):
    _, (active, inside, outside, canceled) = make_jobs(conn, 4)
    conn.execute(NO_TRANSITIONS.format("disable"))
    conn.execute("update public.video_jobs set created_at = now() - interval '200 days' where id = %s", (active["id"],))
    conn.execute(NO_TRANSITIONS.format("enable"))
    end(conn, inside["id"], "failed")
    age(conn, inside["id"], 89.99)  # ended a quarter of an hour after the cutoff
    end(conn, outside["id"], "failed")
    age(conn, outside["id"], 90.01)
    end(conn, canceled["id"], "canceled")
    age(conn, canceled["id"], 90.01)
    assert prune(conn)[0] == 2
    assert remaining(conn, [j["id"] for j in (active, inside, outside, canceled)]) == {active["id"], inside["id"]}


def test_a_claim_during_a_prune_batch_is_not_blocked_by_it(db, conn):
    _, jobs = make_jobs(conn, 3)
    for job in jobs[:2]:
        end(conn, job["id"], "failed")
        age(conn, job["id"], 100)
    queued = jobs[2]
    with db.connect() as pruner, pruner.transaction():  # a batch deleted and not yet committed
        with pruner.cursor() as cur:
            cur.execute("set local role service_role")
            cur.execute(PRUNE, ("90 days", 10))
            assert cur.fetchone()[0] == 2
        with db.connect() as worker:
            worker.execute("set lock_timeout = '1s'")
            claimed = claim(worker, "w-claims")
        assert [c["id"] for c in claimed] == [queued["id"]], "the claim went through while the batch was open"


def test_a_prune_skips_a_job_another_transaction_holds_instead_of_waiting(db, conn):
    _, (held, free) = make_jobs(conn, 2)
    for job in (held, free):
        end(conn, job["id"], "failed")
        age(conn, job["id"], 100)
    with db.connect() as holder, holder.transaction():
        holder.execute("select 1 from public.video_jobs where id = %s for update", (held["id"],))
        conn.execute("set lock_timeout = '1s'")
        assert prune(conn)[0] == 1
        conn.execute("reset lock_timeout")
    assert remaining(conn, [held["id"], free["id"]]) == {held["id"]}
    assert prune(conn)[0] == 1, "the next prune takes it once it is free"


def test_the_daily_totals_equal_what_was_pruned(conn):
    _, jobs = make_jobs(conn, 7)
    plan = [
        ("completed", "fal", None, 40.0, Decimal("0.5000")),
        ("completed", "fal", None, 40.4, Decimal("0.2500")),
        ("completed", "runway", None, 61.0, Decimal("1.0000")),
        ("failed", "fal", "provider_error", None, None),
        ("failed", "runway", "content_moderated", None, Decimal("0.1000")),
        ("failed", "runway", "content_moderated", None, None),
        ("canceled", "fal", None, None, None),
    ]
    for job, (status, provider, code, ran, cost) in zip(jobs, plan, strict=True):
        end(conn, job["id"], status, provider=provider, error_code=code)
        age(conn, job["id"], 120, ran_seconds=ran)
        if cost is not None:
            conn.execute(
                "insert into vidanim_private.video_job_internals (job_id, estimated_cost_usd) values (%s, %s)"
                " on conflict (job_id) do update set estimated_cost_usd = excluded.estimated_cost_usd",
                (job["id"], cost),
            )
    # what the live rows say, computed independently of the prune
    expected = {
        (r[0], r[1], r[2] or "", r[3] or ""): (r[4], r[5], r[6])
        for r in conn.execute(
            """select (j.created_at at time zone 'utc')::date, j.status, j.provider, j.error_code, count(*),
                      coalesce(sum(extract(epoch from j.completed_at - j.started_at))
                               filter (where j.status = 'completed'), 0),
                      coalesce(sum(i.estimated_cost_usd), 0)
                 from public.video_jobs j left join vidanim_private.video_job_internals i on i.job_id = j.id
                where j.id = any(%s) group by 1, 2, 3, 4""",
            ([j["id"] for j in jobs],),
        ).fetchall()
    }
    # one job a batch: the second job of a day, status, provider and code adds to the first one's row
    assert [prune(conn, batch=1)[0] for _ in range(8)] == [1] * 7 + [0]
    totals = service(conn, TOTALS)
    got = {
        (t["day"], t["status"], t["provider"] or "", t["error_code"] or ""): (
            t["jobs"],
            t["duration_seconds"],
            t["spend_usd"],
        )
        for t in totals
    }
    assert set(got) == set(expected)
    for key, (n, seconds, spend) in expected.items():
        assert got[key][0] == n, key
        assert abs(float(got[key][1]) - float(seconds)) < 1e-3, key
        assert got[key][2] == spend, key
    fal_completed = next(t for t in totals if t["status"] == "completed" and t["provider"] == "fal")
    assert fal_completed["durations"] == {"40": 2}, "40.0 s and 40.4 s: whole seconds, counted"
    runway_failed = next(t for t in totals if t["status"] == "failed" and t["provider"] == "runway")
    assert (runway_failed["jobs"], runway_failed["durations"]) == (2, {})


def test_prune_refuses_a_cutoff_under_a_day_and_a_batch_out_of_range(conn):
    with raises_sqlstate("22023", "at least 1 day"):
        prune(conn, "23 hours")
    assert prune(conn, "1 day") == (0, 0), "exactly one day is allowed"
    with raises_sqlstate("22023", "between 1 and 10000"):
        prune(conn, batch=0)
    with raises_sqlstate("22023", "between 1 and 10000"):
        prune(conn, batch=10001)
    assert prune(conn, batch=10000) == (0, 0)


def test_only_the_service_role_may_prune(conn):
    from tests.support.postgrest import as_user

    user = create_user(conn)
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute(PRUNE, ("90 days", 10))


def test_a_running_prune_and_a_concurrent_one_never_delete_a_job_twice(db, conn):
    _, jobs = make_jobs(conn, 6)
    for job in jobs:
        end(conn, job["id"], "failed", error_code="x")
        age(conn, job["id"], 100)
    results: list[int] = []

    def run() -> None:
        with psycopg.connect(db.dsn, autocommit=True) as c:
            while (n := prune(c, batch=1)[0]) > 0:
                results.append(n)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 6
    (row,) = service(conn, TOTALS)
    assert row["jobs"] == 6, "each job added to the totals once"
