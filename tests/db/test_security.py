"""Row-level security and grants, tried the way an attacker would."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.postgrest import as_anon, as_user, request, user_claims
from tests.support.seed import create_user, put_input_image

TABLES = ["video_jobs", "video_job_events", "video_quota_defaults", "video_user_quotas", "video_quota_usage"]

SERVICE_CALLS = [
    "select * from public.claim_video_jobs('w', 1, 60)",
    "select * from public.service_update_video_job_status(%(job)s, 'completed')",
    "select * from public.service_update_video_job_status(%(job)s, 'processing', 'fal', 't', null, null, null, null, null)",
    "select * from public.renew_video_job_leases('w', array[%(job)s]::uuid[], 60)",
    "select public.release_video_jobs('w', array[%(job)s]::uuid[])",
    "select * from public.schedule_video_job_retry(%(job)s, 'w', 0)",
    "select public.reset_video_quota(%(user)s)",
    "select public.set_video_quota_limits(%(user)s, 1000, 1000)",
    "select public.set_video_quota_defaults(1000, 1000)",
    "select * from public.expire_video_outputs(interval '0')",
]


@pytest.fixture
def two_users_with_jobs(conn):
    alice, bob = create_user(conn), create_user(conn)
    a = request_job(conn, alice, put_input_image(conn, alice))
    b = request_job(conn, bob, put_input_image(conn, bob))
    return alice, bob, a, b


def test_users_see_only_their_own_jobs_and_timeline(conn, two_users_with_jobs):
    alice, _bob, a, b = two_users_with_jobs
    with as_user(conn, alice) as cur:
        cur.execute("select id from public.video_jobs")
        assert [r["id"] for r in cur.fetchall()] == [a["id"]]
        cur.execute("select id from public.video_jobs where id = %s", (b["id"],))
        assert cur.fetchall() == []
        cur.execute("select job_id from public.video_job_events")
        assert {r["job_id"] for r in cur.fetchall()} == {a["id"]}


def test_a_forged_sub_claim_for_another_user_only_works_with_a_valid_token(conn, two_users_with_jobs):
    # The database trusts the claims PostgREST verified; this proves RLS keys on
    # them and nothing else: claims naming bob see bob's rows, never both.
    _alice, bob, a, b = two_users_with_jobs
    with as_user(conn, bob) as cur:
        cur.execute("select id from public.video_jobs")
        assert [r["id"] for r in cur.fetchall()] == [b["id"]]
    assert a["id"] != b["id"]


def test_anon_reads_nothing(conn, two_users_with_jobs):
    for table in TABLES:
        with raises_sqlstate("42501"), as_anon(conn) as cur:
            cur.execute(f"select * from public.{table}")


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_no_api_role_can_write_any_vidanim_table_directly(conn, two_users_with_jobs, table, role):
    alice, _bob, a, _b = two_users_with_jobs
    claims = user_claims(alice) if role == "authenticated" else {}
    writes = {
        "video_jobs": [
            ("update public.video_jobs set status = 'completed', output_video_path = 'x' where id = %s", (a["id"],)),
            ("update public.video_jobs set user_id = user_id where id = %s", (a["id"],)),
            ("delete from public.video_jobs where id = %s", (a["id"],)),
            ("insert into public.video_jobs (user_id, input_image_path) values (%s, 'x/y.png')", (alice,)),
        ],
        "video_job_events": [
            (
                "insert into public.video_job_events (job_id, user_id, status) values (%s, %s, 'completed')",
                (a["id"], alice),
            ),
            ("delete from public.video_job_events where job_id = %s", (a["id"],)),
            ("update public.video_job_events set status = 'completed' where job_id = %s", (a["id"],)),
        ],
        "video_quota_defaults": [
            ("update public.video_quota_defaults set daily_limit = 100000 where %s::text is not null", (1,))
        ],
        "video_user_quotas": [
            ("insert into public.video_user_quotas (user_id, daily_limit) values (%s, 100000)", (alice,)),
            ("update public.video_user_quotas set daily_limit = 100000 where user_id = %s", (alice,)),
        ],
        "video_quota_usage": [
            ("update public.video_quota_usage set used = 0 where user_id = %s", (alice,)),
            ("delete from public.video_quota_usage where user_id = %s", (alice,)),
            ("insert into public.video_quota_usage (user_id, day, used) values (%s, '2000-01-01', 0)", (alice,)),
        ],
    }[table]
    for statement, params in writes:
        with raises_sqlstate("42501"), request(conn, role, claims) as cur:
            cur.execute(statement, params)
    with raises_sqlstate("42501"), request(conn, role, claims) as cur:
        cur.execute(f"truncate public.{table} cascade")
    row = conn.execute("select status, user_id from public.video_jobs where id = %s", (a["id"],)).fetchone()
    assert row == ("queued", alice)


@pytest.mark.parametrize("call", SERVICE_CALLS)
@pytest.mark.parametrize("role", ["authenticated", "anon"])
def test_service_functions_are_refused_to_api_roles(conn, two_users_with_jobs, call, role):
    alice, _bob, a, _b = two_users_with_jobs
    claims = user_claims(alice) if role == "authenticated" else {}
    with raises_sqlstate("42501", "permission denied"), request(conn, role, claims) as cur:
        cur.execute(call, {"job": a["id"], "user": alice})


@pytest.mark.parametrize("call", SERVICE_CALLS)
def test_forged_service_role_claims_do_not_grant_service_functions(conn, two_users_with_jobs, call):
    alice, _bob, a, _b = two_users_with_jobs
    forged = {"sub": str(alice), "role": "service_role", "app_metadata": {"role": "service_role"}}
    with raises_sqlstate("42501"), request(conn, "authenticated", forged) as cur:
        cur.execute(call, {"job": a["id"], "user": alice})


@pytest.mark.parametrize("table", TABLES)
def test_postgrests_login_role_itself_reaches_no_table(db, table):
    """PostgREST logs in as `authenticator` (noinherit): before it switches role, nothing."""
    with (
        psycopg.connect(psycopg.conninfo.make_conninfo(db.dsn, user="authenticator"), autocommit=True) as c,
        raises_sqlstate("42501"),
    ):
        c.execute(f"select * from public.{table}")


def test_private_functions_called_directly_still_check_the_caller(conn, two_users_with_jobs):
    _alice, bob, a, _b = two_users_with_jobs
    with raises_sqlstate("PT404"), as_user(conn, bob) as cur:
        cur.execute("select * from vidanim_private.cancel_video_job(%s)", (a["id"],))
    with raises_sqlstate("42501"), as_anon(conn) as cur:
        cur.execute("select * from vidanim_private.request_video_animation('a/b.png', null, '{}', null)")
    with raises_sqlstate("42501"), as_user(conn, bob) as cur:
        cur.execute("select * from vidanim_private.video_quota_status(%s)", (a["user_id"],))


def test_users_cannot_cancel_other_users_jobs_and_learn_nothing(conn, two_users_with_jobs):
    _alice, bob, a, _b = two_users_with_jobs
    with raises_sqlstate("PT404", "not found"), as_user(conn, bob) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (a["id"],))
    with raises_sqlstate("PT404", "not found"), as_user(conn, bob) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (uuid.uuid4(),))
    assert conn.execute("select status from public.video_jobs where id = %s", (a["id"],)).fetchone() == ("queued",)


def test_cancel_of_an_ended_job_is_pt409(conn, two_users_with_jobs):
    alice, _bob, a, _b = two_users_with_jobs
    with as_user(conn, alice) as cur:
        cur.execute("select status from public.cancel_video_job(%s)", (a["id"],))
        assert cur.fetchone() == {"status": "canceled"}
    with raises_sqlstate("PT409", "already ended"), as_user(conn, alice) as cur:
        cur.execute("select * from public.cancel_video_job(%s)", (a["id"],))


def test_cancel_requires_a_job_id(conn, two_users_with_jobs):
    alice, *_ = two_users_with_jobs
    with raises_sqlstate("22023"), as_user(conn, alice) as cur:
        cur.execute("select * from public.cancel_video_job(null)")


def test_users_cannot_read_auth_users(conn, two_users_with_jobs):
    alice, *_ = two_users_with_jobs
    with raises_sqlstate("42501"), as_user(conn, alice) as cur:
        cur.execute("select * from auth.users")


def test_a_client_cannot_fake_completion_through_any_path(conn, two_users_with_jobs):
    """The summary's limitation 9: no client path changes a status."""
    alice, _bob, a, _b = two_users_with_jobs
    attempts = [
        "update public.video_jobs set status = 'completed' where id = %(job)s",
        "select * from public.service_update_video_job_status(%(job)s, 'completed')",
        "select * from vidanim_private.request_video_animation(null, null, null, null)",
    ]
    for statement in attempts:
        with pytest.raises(psycopg.Error), as_user(conn, alice) as cur:
            cur.execute(statement, {"job": a["id"]})
    assert conn.execute("select status from public.video_jobs where id = %s", (a["id"],)).fetchone() == ("queued",)
    claim(conn, "w")
    update_status(conn, a["id"], "processing", provider="fal", provider_task_id="t", worker_id="w")


WORKER_INTERNALS = ("submitting_to", "estimated_cost_usd", "error_detail")


def test_a_users_own_row_holds_none_of_the_workers_internals(conn, two_users_with_jobs):
    alice, _, job, _ = two_users_with_jobs
    claim(conn, "w1", limit=10)
    service(conn, "select public.acquire_video_provider_slot(%s, 'w1', 'fal')", (job["id"],))
    service(conn, "select * from public.reserve_video_spend(%s, 'w1', 'fal', 0.28)", (job["id"],))
    service(conn, "select public.note_video_job_error_detail(%s, 'runway refused our account (401)')", (job["id"],))
    with as_user(conn, alice) as cur:
        cur.execute("select * from public.video_jobs where id = %s", (job["id"],))
        row = cur.fetchone()
    assert row is not None, "select * keeps working for the owner"
    assert set(WORKER_INTERNALS).isdisjoint(row), sorted(set(WORKER_INTERNALS) & set(row))
    assert "refused our account" not in str(dict(row))
    (internals,) = service(conn, "select * from public.get_video_job_internals(%s)", (job["id"],))
    assert internals["submitting_to"] == "fal", "the service role still knows"


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_no_api_role_reads_the_workers_internals(conn, two_users_with_jobs, role):
    alice, _, job, _ = two_users_with_jobs
    for query in (
        "select * from vidanim_private.video_job_internals",
        "select * from vidanim_private.video_submissions_in_flight",
    ):
        with raises_sqlstate("42501"), as_user(conn, alice) if role == "authenticated" else as_anon(conn) as cur:
            cur.execute(query)
    with raises_sqlstate("42501"), as_user(conn, alice) as cur:
        cur.execute("select * from public.get_video_job_internals(%s)", (job["id"],))
