"""list_stale_video_inputs (0055): the input images no queued or processing job needs, past the TTL."""

from __future__ import annotations

import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.seed import create_user, put_input_image, put_object

STALE = "select name from public.list_stale_video_inputs(%s::interval, %s)"


def _age(conn, names, interval):
    conn.execute(
        "update storage.objects set created_at = now() - %s::interval where name = any(%s)", (interval, list(names))
    )


def test_an_input_exactly_at_the_age_is_kept_and_one_a_second_older_is_listed(conn):
    user = create_user(conn)
    at, past = put_input_image(conn, user, "at.png"), put_input_image(conn, user, "past.png")
    with conn.transaction():  # one transaction: one now() for the ages and the listing
        _age(conn, [at], "30 days")
        _age(conn, [past], "30 days 1 second")
        listed = {r["name"] for r in service(conn, STALE, ("30 days", 1000))}
    assert past in listed
    assert at not in listed


def test_the_inputs_of_queued_and_processing_jobs_are_never_listed_however_old(conn):
    user = create_user(conn)
    processing = request_job(conn, user, put_input_image(conn, user, "processing.png"))
    claim(conn, "w")
    update_status(conn, processing["id"], "processing", provider="fal", provider_task_id="t", worker_id="w")
    queued = request_job(conn, user, put_input_image(conn, user, "queued.png"))
    ended = request_job(conn, user, put_input_image(conn, user, "ended.png"))
    update_status(conn, ended["id"], "failed")
    refused = put_input_image(conn, user, "refused.png")
    put_object(conn, "video-outputs", f"{user}/old.mp4", mimetype="video/mp4")
    names = [processing["input_image_path"], queued["input_image_path"], ended["input_image_path"], refused]
    _age(conn, [*names, f"{user}/old.mp4"], "31 days")
    listed = {r["name"] for r in service(conn, STALE, ("30 days", 1000))}
    assert listed == {ended["input_image_path"], refused}, "an old output is no input, an active job's input stays"


@pytest.mark.parametrize("limit", [1, 100000])
def test_the_limits_bounds_are_accepted(conn, limit):
    assert len(service(conn, STALE, ("0 seconds", limit))) <= limit


@pytest.mark.parametrize(("age", "limit"), [("30 days", 0), ("30 days", 100001), ("-1 second", 10)])
def test_a_limit_outside_1_to_100000_or_a_negative_age_is_refused(conn, age, limit):
    with raises_sqlstate("22023"):
        service(conn, STALE, (age, limit))
