"""Provider circuit breakers in the database: shared by every worker, one probe at a time."""

from __future__ import annotations

import uuid

import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image, set_limits

OPEN = "select * from public.open_video_provider_breaker(%s, %s, %s, %s)"
PROBE = "select public.begin_video_provider_probe(%s, %s, %s) as probing"
CLOSE = "select public.close_video_provider_breaker(%s) as closed"


def _probe(conn, provider, job_id=None, seconds=60):
    return service(conn, PROBE, (provider, job_id or uuid.uuid4(), seconds))[0]["probing"]


def test_opening_reports_the_previous_state_so_alerts_fire_once_per_change(conn):
    (first,) = service(conn, OPEN, ("fal", "credentials", "401 from fal", 60))
    (again,) = service(conn, OPEN, ("fal", "credentials", "401 from fal", 60))
    assert (first["previous_state"], first["state"]) == ("closed", "open")
    assert (again["previous_state"], again["state"]) == ("open", "open")
    (row,) = service(conn, "select * from public.get_video_provider_breakers()")
    assert (row["provider"], row["kind"], row["trips"]) == ("fal", "credentials", 1)


def test_an_open_breaker_is_probed_by_one_job_at_a_time_once_it_is_due(conn):
    service(conn, OPEN, ("fal", "outage", "503", 0))
    first, second = uuid.uuid4(), uuid.uuid4()
    assert _probe(conn, "fal", first) is True
    assert _probe(conn, "fal", second) is False, "one probe at a time"
    assert _probe(conn, "fal", first) is True, "the probing job may retry its own probe"
    conn.execute("update vidanim_private.video_provider_breakers set probe_until = now() - interval '1 s'")
    assert _probe(conn, "fal", second) is True, "a probe whose time is up frees the slot"


def test_a_breaker_not_yet_due_is_not_probed(conn):
    service(conn, OPEN, ("runway", "credits", "402", 600))
    assert _probe(conn, "runway") is False


def test_closing_wakes_the_jobs_that_wait_for_providers(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    service(conn, "select * from public.defer_video_job(%s, 'w1', 600, 'providers_unavailable')", (job["id"],))
    service(conn, OPEN, ("fal", "credentials", "401", 600))
    assert service(conn, CLOSE, ("fal",))[0]["closed"] is True
    assert service(conn, CLOSE, ("fal",))[0]["closed"] is False, "closing a closed breaker changes nothing"
    (again,) = claim(conn, "w2")
    assert again["id"] == job["id"]


@pytest.mark.parametrize(("closed", "woken"), [("storage", "storage_unavailable"), ("fal", "providers_unavailable")])
def test_closing_storages_breaker_wakes_the_jobs_waiting_for_storage_and_a_providers_only_its_own(conn, closed, woken):
    user = create_user(conn)
    set_limits(conn, user, None, 10)
    waiting = {}
    for reason in ("storage_unavailable", "providers_unavailable"):
        job = request_job(conn, user, put_input_image(conn, user, f"{reason}.png"))
        claim(conn, "w1")
        service(conn, "select * from public.defer_video_job(%s, 'w1', 600, %s)", (job["id"], reason))
        waiting[reason] = job["id"]
    service(conn, OPEN, (closed, "credentials", "refused", 600))
    assert service(conn, CLOSE, (closed,))[0]["closed"] is True
    due = {
        r[0]
        for r in conn.execute(
            "select waiting_reason from public.video_jobs where next_attempt_at <= now() and status = 'queued'"
        )
    }
    assert due == {woken}


def test_a_restart_makes_account_faults_due_for_a_probe_but_not_outages(conn):
    service(conn, OPEN, ("fal", "credentials", "401", 600))
    service(conn, OPEN, ("runway", "outage", "503", 600))
    assert service(conn, "select public.recheck_video_provider_breakers() as n")[0]["n"] == 1
    assert _probe(conn, "fal") is True
    assert _probe(conn, "runway") is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Fal!", "outage", "x", 1), "provider"),
        (("fal", "", "x", 1), "kind"),
        (("fal", "outage", "x", -1), "open time"),
    ],
)
def test_open_refuses_bad_arguments(conn, args, message):
    with raises_sqlstate("22023", message):
        service(conn, OPEN, args)


def test_users_cannot_see_or_touch_breakers(conn):
    user = create_user(conn)
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute("select * from vidanim_private.video_provider_breakers")
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute(CLOSE, ("fal",))


# Concurrency caps (0026) ------------------------------------------------------------------
ACQUIRE = "select public.acquire_video_provider_slot(%s, %s, %s) as acquired"


def test_a_provider_cap_holds_across_submitting_and_processing_jobs_and_frees_on_end(conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    path = put_input_image(conn, user)
    a, b, c = (request_job(conn, user, path) for _ in range(3))
    claim(conn, "w1", limit=3)
    service(conn, "select public.set_video_provider_limit('runway', 2)")
    assert service(conn, ACQUIRE, (a["id"], "w1", "runway"))[0]["acquired"] is True
    assert service(conn, ACQUIRE, (b["id"], "w1", "runway"))[0]["acquired"] is True
    assert service(conn, ACQUIRE, (c["id"], "w1", "runway"))[0]["acquired"] is False, "two in flight: the cap"
    assert service(conn, ACQUIRE, (c["id"], "w1", "fal"))[0]["acquired"] is True, "fal has no cap"
    update_status(conn, a["id"], "processing", provider="runway", provider_task_id="t-a", worker_id="w1")
    assert service(conn, ACQUIRE, (c["id"], "w1", "runway"))[0]["acquired"] is False, "processing still counts"
    update_status(conn, a["id"], "failed", error_code="x", error_message="x", worker_id="w1")
    assert service(conn, ACQUIRE, (c["id"], "w1", "runway"))[0]["acquired"] is True, "an ended job frees its slot"
    service(conn, "select public.release_video_jobs('w1', %s)", ([b["id"]],))
    assert conn.execute(
        "select submitting_to from vidanim_private.video_job_internals where job_id = %s", (b["id"],)
    ).fetchone() == (None,)


@pytest.mark.parametrize(("provider", "cap", "message"), [("Runway!", 2, "provider"), ("runway", -1, "max_in_flight")])
def test_set_provider_limit_refuses_bad_values(conn, provider, cap, message):
    with raises_sqlstate("22023", message):
        service(conn, "select public.set_video_provider_limit(%s, %s)", (provider, cap))


def test_a_slot_held_by_a_job_whose_lease_expired_mid_submission_is_free_again(conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    path = put_input_image(conn, user)
    dead, alive = (request_job(conn, user, path) for _ in range(2))
    claim(conn, "w1", limit=1)
    claim(conn, "w2", limit=1)
    service(conn, "select public.set_video_provider_limit('runway', 1)")
    assert service(conn, ACQUIRE, (dead["id"], "w1", "runway"))[0]["acquired"] is True
    assert service(conn, ACQUIRE, (alive["id"], "w2", "runway"))[0]["acquired"] is False, "the cap: one"
    # w1 dies in the middle of its submission: its lease runs out, nobody claims the job yet
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 s' where id = %s", (dead["id"],))
    assert service(conn, ACQUIRE, (alive["id"], "w2", "runway"))[0]["acquired"] is True, "a dead worker holds no slot"


def test_jobs_at_another_provider_take_no_slot_of_this_providers_cap(conn):
    user = create_user(conn)
    set_limits(conn, user, 10, 10)
    path = put_input_image(conn, user)
    at_fal, to_fal, first, second = (request_job(conn, user, path) for _ in range(4))
    claim(conn, "w1", limit=4)
    service(conn, "select public.set_video_provider_limit('runway', 1)")
    assert service(conn, ACQUIRE, (at_fal["id"], "w1", "fal"))[0]["acquired"] is True
    update_status(conn, at_fal["id"], "processing", provider="fal", provider_task_id="t-fal", worker_id="w1")
    assert service(conn, ACQUIRE, (to_fal["id"], "w1", "fal"))[0]["acquired"] is True  # submitting to fal now
    assert service(conn, ACQUIRE, (first["id"], "w1", "runway"))[0]["acquired"] is True, "fal's two are not runway's"
    assert service(conn, ACQUIRE, (second["id"], "w1", "runway"))[0]["acquired"] is False, "runway's one slot: taken"
