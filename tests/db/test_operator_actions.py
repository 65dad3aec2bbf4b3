"""Operators' actions in SQL (0050-0053): pauses, cancels and retries by filter, breakers, the cap; each audited."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from tests.db.helpers import claim, job_row, raises_sqlstate, request_job, service, update_status, usage
from tests.support.postgrest import as_service
from tests.support.seed import create_user, put_input_image, set_limits

ACQUIRE = "select public.acquire_video_provider_slot(%s, %s, %s) as acquired"
PAUSE = "select public.pause_video_submissions(%s, %s, %s) as paused"
RESUME = "select public.resume_video_submissions(%s, %s) as woken"
CANCEL_JOBS = "select * from public.operator_cancel_video_jobs(%s, %s, %s, %s)"
RETRY_JOBS = "select * from public.operator_retry_video_jobs(%s, %s, %s, %s)"
ACTIONS = "select * from public.get_video_operator_actions(50)"


def _jobs(conn, n: int):
    user = create_user(conn)
    set_limits(conn, user, 100, n)
    path = put_input_image(conn, user)
    return user, [request_job(conn, user, path) for _ in range(n)]


def _failed(conn, n: int, *, code: str = "provider_unavailable", active: int | None = None):
    user, jobs = _jobs(conn, n)
    for job in jobs:
        update_status(conn, job["id"], "failed", error_code=code, error_message="The video providers failed.")
    set_limits(conn, user, 100, active if active is not None else n)
    return user, jobs


def _jsonb(value: dict) -> psycopg.types.json.Jsonb:
    return psycopg.types.json.Jsonb(value)


def test_a_paused_provider_gives_no_slot_while_the_other_provider_still_does(conn):
    _, (job,) = _jobs(conn, 1)
    claim(conn, "w1")
    assert service(conn, PAUSE, ("fal", "test:ops", "fal misbehaves"))[0]["paused"] is True
    assert service(conn, ACQUIRE, (job["id"], "w1", "fal"))[0]["acquired"] is False
    assert service(conn, ACQUIRE, (job["id"], "w1", "runway"))[0]["acquired"] is True


def test_a_pause_of_every_provider_gives_no_slot_anywhere_and_its_resume_gives_them_back(conn):
    _, (job,) = _jobs(conn, 1)
    claim(conn, "w1")
    service(conn, PAUSE, (None, "test:ops", None))
    assert [service(conn, ACQUIRE, (job["id"], "w1", p))[0]["acquired"] for p in ("fal", "runway")] == [False, False]
    service(conn, RESUME, (None, "test:ops"))
    assert service(conn, ACQUIRE, (job["id"], "w1", "fal"))[0]["acquired"] is True


def test_a_resume_wakes_the_jobs_that_waited_for_the_pause_and_no_other(conn):
    _, (paused, budget) = _jobs(conn, 2)
    claim(conn, "w1")
    service(conn, PAUSE, (None, "test:ops", None))
    service(conn, "select * from public.defer_video_job(%s, 'w1', 3600, 'submissions_paused')", (paused["id"],))
    service(conn, "select * from public.defer_video_job(%s, 'w1', 3600, 'budget_reached')", (budget["id"],))
    assert service(conn, RESUME, (None, "test:ops"))[0]["woken"] == 1
    due = conn.execute(
        "select id from public.video_jobs where next_attempt_at <= now() and id = any(%s)",
        ([paused["id"], budget["id"]],),
    ).fetchall()
    assert [r[0] for r in due] == [paused["id"]]


def test_a_resume_of_one_provider_leaves_the_pause_of_every_provider(conn):
    service(conn, PAUSE, (None, "test:ops", None))
    service(conn, PAUSE, ("fal", "test:ops", None))
    service(conn, RESUME, ("fal", "test:ops"))
    assert [r["scope"] for r in service(conn, "select * from public.get_video_submission_pauses()")] == ["all"]


def test_a_bulk_retry_counts_in_its_dry_run_and_acts_only_on_that_count_confirmed(conn):
    user, failed = _failed(conn, 3)
    other_user, _ = _failed(conn, 1, code="input_missing")
    filt = _jsonb({"error_code": "provider_unavailable"})
    dry = service(conn, RETRY_JOBS, (filt, "test:ops", True, None))[0]
    assert (dry["matched"], dry["acted"]) == (3, 0)
    assert conn.execute("select count(*) from public.video_jobs").fetchone()[0] == 4
    with raises_sqlstate("PT409", match="matches 3 jobs, not the 2 confirmed"):
        service(conn, RETRY_JOBS, (filt, "test:ops", False, 2))
    done = service(conn, RETRY_JOBS, (filt, "test:ops", False, 3))[0]
    assert (done["matched"], done["acted"], done["skipped"]) == (3, 3, 0)
    new = conn.execute(
        "select client_request_id, status, user_id from public.video_jobs where client_request_id like 'retry:%%'"
    ).fetchall()
    assert sorted(r[0] for r in new) == sorted(f"retry:{j['id']}" for j in failed)
    assert {(r[1], r[2]) for r in new} == {("queued", user)}
    assert conn.execute("select count(*) from public.video_jobs where user_id = %s", (other_user,)).fetchone()[0] == 1
    (action,) = [a for a in service(conn, ACTIONS) if a["action"] == "retry_jobs"]
    assert (action["actor"], action["jobs"], action["detail"]["filter"]) == (
        "test:ops",
        3,
        {"error_code": "provider_unavailable"},
    )


def test_a_bulk_retry_the_owners_quota_refuses_is_skipped_not_forced(conn):
    user, _ = _failed(conn, 2, active=1)
    done = service(conn, RETRY_JOBS, (_jsonb({"user_id": str(user)}), "test:ops", False, 2))[0]
    assert (done["acted"], done["skipped"]) == (1, 1)
    assert conn.execute("select count(*) from public.video_jobs where status = 'queued'").fetchone()[0] == 1


def test_a_bulk_cancel_ends_only_the_matching_users_active_jobs_and_refunds_them(conn):
    mine, (a, b) = _jobs(conn, 2)
    theirs, (c,) = _jobs(conn, 1)
    assert usage(conn, mine) == 2
    done = service(conn, CANCEL_JOBS, (_jsonb({"user_id": str(mine)}), "test:ops", False, 2))[0]
    assert (done["matched"], done["acted"]) == (2, 2)
    assert [job_row(conn, j["id"])["status"] for j in (a, b, c)] == ["canceled", "canceled", "queued"]
    assert job_row(conn, a["id"])["error_code"] == "canceled_by_operator"
    assert (usage(conn, mine), usage(conn, theirs)) == (0, 1)


def test_a_retry_leaves_the_callers_own_claims_as_they_were(conn):
    _, (job,) = _failed(conn, 1)
    with as_service(conn) as cur:
        cur.execute("select * from public.operator_retry_video_job(%s, 'test:ops')", (job["id"],))
        cur.execute("select auth.uid() as uid, current_setting('request.jwt.claims', true) as claims")
        row = cur.fetchone()
    assert row["uid"] is None
    assert row["claims"] == '{"role": "service_role"}'


def test_a_search_by_provider_task_id_matches_that_job_alone(conn):
    _, (a, b) = _jobs(conn, 2)
    claim(conn, "w1")
    update_status(conn, a["id"], "processing", provider="fal", provider_task_id="task-a", worker_id="w1")
    update_status(conn, b["id"], "processing", provider="fal", provider_task_id="task-b", worker_id="w1")
    dry = service(conn, CANCEL_JOBS, (_jsonb({"q": "task-b"}), "test:ops", True, None))[0]
    assert dry["matched"] == 1
    service(conn, CANCEL_JOBS, (_jsonb({"q": "task-b"}), "test:ops", False, 1))
    assert [job_row(conn, j["id"])["status"] for j in (a, b)] == ["processing", "canceled"]


@pytest.mark.parametrize(
    ("filt", "message"),
    [
        ({"colour": "red"}, "unknown filter key"),
        ({"status": "lost"}, "unknown status"),
        ({"provider": "acme"}, "unknown provider"),
        ({"user_id": "not-a-uuid"}, "user_id must be a UUID"),
        ({"status": 3}, "must be text"),
    ],
)
def test_a_bad_filter_is_refused_with_a_clear_error(conn, filt, message):
    with raises_sqlstate("22023", match=message):
        service(conn, CANCEL_JOBS, (_jsonb(filt), "test:ops", True, None))


def test_an_action_without_an_actor_is_refused(conn):
    with raises_sqlstate("22023", match="actor"):
        service(conn, PAUSE, (None, "", None))


def test_breaker_and_cap_actions_do_what_they_say_and_are_recorded(conn):
    assert service(conn, "select public.operator_set_video_provider_breaker('fal', 'open', 'test:ops', 'bad day') as c")
    breaker = service(conn, "select * from public.get_video_provider_breakers()")[0]
    assert (breaker["provider"], breaker["state"], breaker["kind"]) == ("fal", "open", "operator")
    service(conn, "select public.operator_set_video_provider_breaker('fal', 'closed', 'test:ops') as c")
    assert service(conn, "select * from public.get_video_provider_breakers()")[0]["state"] == "closed"
    service(conn, "select public.operator_set_video_daily_budget(12.5, 'test:ops')")
    assert service(conn, "select public.get_video_daily_budget() as cap")[0]["cap"] == Decimal("12.5")
    assert [a["action"] for a in service(conn, ACTIONS)] == ["set_daily_budget", "closed_breaker", "open_breaker"]


def test_users_can_run_no_operator_action(conn):
    user, (job,) = _jobs(conn, 1)
    from tests.support.postgrest import as_user

    for query, params in [
        (PAUSE, (None, "me", None)),
        ("select public.operator_cancel_video_job(%s, 'me')", (job["id"],)),
        (CANCEL_JOBS, (_jsonb({}), "me", True, None)),
        (ACTIONS, ()),
    ]:
        with raises_sqlstate("42501"), as_user(conn, user) as cur:
            cur.execute(query, params)
