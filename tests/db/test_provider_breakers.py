"""Provider circuit breakers in the database: shared by every worker, one probe at a time."""

from __future__ import annotations

import uuid

import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image

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
