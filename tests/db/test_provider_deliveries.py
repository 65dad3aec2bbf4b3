"""Webhook deliveries and counted submissions in SQL (0030, 0031): every outcome, every refusal."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest

from tests.db.helpers import claim, raises_sqlstate, request_job, service, update_status
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image

RECORD = "select public.record_video_provider_delivery(%s, %s, %s, %s, %s) as outcome"
GET = "select * from public.get_video_provider_delivery(%s)"
SUBMITTED = "select public.record_video_job_submission(%s, %s, %s, %s, %s) as outcome"
UNCERTAIN = "select * from public.record_uncertain_video_job_submission(%s, %s, %s, %s)"
OK = {"status": "OK", "payload": {"video": {"url": "https://v3.fal.media/out.mp4"}}}


def deliver(conn, job_id, request_id, status="OK", body=None):
    body = {"request_id": request_id, **(body or OK), "status": status}
    (row,) = service(conn, RECORD, (job_id, "fal", request_id, status, psycopg.types.json.Jsonb(body)))
    return row["outcome"]


def job(conn, **kw):
    user = create_user(conn)
    return request_job(conn, user, put_input_image(conn, user)), user


def running_job(conn, task="req-1", worker="w1"):
    row, user = job(conn)
    claim(conn, worker)
    assert service(conn, SUBMITTED, (row["id"], worker, "fal", task, "IN_QUEUE"))[0]["outcome"] == "recorded"
    return row["id"], user


def deliveries(conn, request_id):
    return conn.execute(
        "select outcome, deliveries from vidanim_private.video_provider_deliveries where request_id = %s",
        (request_id,),
    ).fetchall()


def test_a_delivery_for_the_task_a_running_job_holds_is_recorded_and_wakes_its_worker(conn, db):
    job_id, _ = running_job(conn)
    with db.connect() as listener:
        listener.execute("listen vidanim_deliveries")
        assert deliver(conn, job_id, "req-1") == "recorded"
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("vidanim_deliveries", str(job_id))]
    (got,) = service(conn, GET, (job_id,))
    assert (got["provider"], got["request_id"], got["status"]) == ("fal", "req-1", "OK")
    assert got["body"]["payload"]["video"]["url"].endswith("out.mp4")


def test_a_duplicate_delivery_is_counted_and_changes_nothing(conn, db):
    job_id, _ = running_job(conn)
    assert deliver(conn, job_id, "req-1") == "recorded"
    with db.connect() as listener:
        listener.execute("listen vidanim_deliveries")
        assert deliver(conn, job_id, "req-1", "ERROR", {"error": "late and different"}) == "duplicate"
        assert list(listener.notifies(timeout=0.3)) == []
    assert deliveries(conn, "req-1") == [("recorded", 2)]
    assert service(conn, GET, (job_id,))[0]["status"] == "OK", "the first delivery stands"


@pytest.mark.parametrize("end", ["completed", "failed", "canceled"])
def test_a_delivery_after_the_job_ended_is_a_no_op(conn, end, db):
    job_id, user = running_job(conn)
    if end == "completed":
        path = f"{user}/{job_id}.mp4"
        conn.execute(
            "insert into storage.objects (bucket_id, name, owner_id) values ('video-outputs', %s, %s)",
            (path, str(user)),
        )
        update_status(conn, job_id, "completed", output_video_path=path)
    elif end == "failed":
        update_status(conn, job_id, "failed", error_code="x", error_message="x")
    else:
        with as_user(conn, user) as cur:
            cur.execute("select public.cancel_video_job(%s)", (job_id,))
    before = conn.execute("select to_jsonb(j) from public.video_jobs j where id = %s", (job_id,)).fetchone()
    assert deliver(conn, job_id, "req-1") == "ended"
    after = conn.execute("select to_jsonb(j) from public.video_jobs j where id = %s", (job_id,)).fetchone()
    assert before == after


def test_a_delivery_for_a_request_the_job_does_not_hold_is_an_orphan(conn):
    job_id, _ = running_job(conn, task="req-held")
    assert deliver(conn, job_id, "req-stray") == "orphan"
    assert conn.execute(
        "select provider_task_id, status from public.video_jobs where id = %s", (job_id,)
    ).fetchone() == (
        "req-held",
        "processing",
    )
    assert service(conn, GET, (job_id,)) == [], "the job's own task has no delivery yet"


def test_a_job_waiting_after_a_lost_answer_adopts_the_request_its_delivery_names(conn, db):
    row, _ = job(conn)
    claim(conn, "w1")
    waiting = service(conn, UNCERTAIN, (row["id"], "w1", "fal", 600))[0]
    assert (waiting["status"], waiting["provider_status"], waiting["waiting_reason"]) == (
        "queued",
        "submission_uncertain",
        "submission_uncertain",
    )
    assert (waiting["provider_submissions"], waiting["uncertain_submissions"], waiting["locked_by"]) == (1, 1, None)
    with db.connect() as listener:
        listener.execute("listen vidanim_jobs")
        service(conn, "select public.arm_video_job_wakeups('w2', 60)")  # an idle worker listens (0042)
        assert deliver(conn, row["id"], "req-orphan") == "adopted"
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1, "a worker is woken to finish it"
    adopted = conn.execute(
        "select status, provider_task_id, waiting_reason, locked_by, next_attempt_at <= now(),"
        " provider_submissions from public.video_jobs where id = %s",
        (row["id"],),
    ).fetchone()
    assert adopted == ("processing", "req-orphan", None, None, True, 1), "adopting is not another submission"
    assert service(conn, GET, (row["id"],))[0]["request_id"] == "req-orphan"
    events = conn.execute(
        "select status, provider_status from public.video_job_events where job_id = %s order by id", (row["id"],)
    ).fetchall()
    assert events[-2:] == [("queued", "submission_uncertain"), ("processing", "ADOPTED")]


def test_adoption_takes_the_job_from_a_worker_submitting_again_which_must_cancel_its_task(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    service(conn, UNCERTAIN, (row["id"], "w1", "fal", 0))
    claim(conn, "w2")  # the wait is over: w2 submits once more ...
    assert deliver(conn, row["id"], "req-orphan") == "adopted"  # ... as the first task's delivery arrives
    outcome = service(conn, SUBMITTED, (row["id"], "w2", "fal", "req-extra", "IN_QUEUE"))[0]["outcome"]
    assert outcome == "refused", "w2's task is not the job's: it cancels it"
    counts = conn.execute(
        "select provider_task_id, provider_submissions, uncertain_submissions from public.video_jobs where id = %s",
        (row["id"],),
    ).fetchone()
    assert counts == ("req-orphan", 2, 1)


def test_an_answer_naming_the_task_the_job_already_holds_is_held_not_refused(conn):
    """A late answer for the very task a delivery had the job adopt: nothing to cancel, counted once more."""
    row, _ = job(conn)
    claim(conn, "w1")
    service(conn, UNCERTAIN, (row["id"], "w1", "fal", 600))
    assert deliver(conn, row["id"], "req-late") == "adopted"
    outcome = service(conn, SUBMITTED, (row["id"], "w1", "fal", "req-late", "IN_QUEUE"))[0]["outcome"]
    assert outcome == "held", "the job's own task: 'refused' would make the worker cancel the job's video"
    state = conn.execute(
        "select status, provider_task_id, provider_submissions from public.video_jobs where id = %s", (row["id"],)
    ).fetchone()
    assert state == ("processing", "req-late", 2)


def test_an_ok_delivery_for_a_queued_job_that_never_lost_an_answer_is_an_orphan(conn):
    """0034: an OK delivery alone proves nothing (another fal account can have one signed): no adoption."""
    row, _ = job(conn)
    claim(conn, "w1")  # w1 submitted; a delivery arrives before its answer is recorded
    assert deliver(conn, row["id"], "req-fast") == "orphan"
    state = conn.execute(
        "select status, provider, provider_task_id from public.video_jobs where id = %s", (row["id"],)
    ).fetchone()
    assert state == ("queued", None, None), "nothing adopted"
    outcome = service(conn, SUBMITTED, (row["id"], "w1", "fal", "req-fast", "IN_QUEUE"))[0]["outcome"]
    assert outcome == "recorded", "w1's own answer still records its task: the race costs nothing"
    (got,) = service(conn, GET, (row["id"],))
    assert got["request_id"] == "req-fast", "and the delivery already recorded is read by its worker"


def test_an_ok_delivery_for_a_job_requeued_after_its_task_at_fal_failed_is_an_orphan(conn):
    """The job keeps provider = 'fal' when a retry puts it back in the queue, but it lost no answer there."""
    job_id, _ = running_job(conn)
    service(conn, "select public.schedule_video_job_retry(%s, 'w1', 60, 'x', 'x')", (job_id,))
    assert deliver(conn, job_id, "req-other") == "orphan"
    state = conn.execute(
        "select status, provider, provider_task_id from public.video_jobs where id = %s", (job_id,)
    ).fetchone()
    assert state == ("queued", "fal", None), "nothing adopted"


def test_a_fal_delivery_for_a_job_whose_answer_was_lost_at_runway_is_an_orphan(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    service(conn, UNCERTAIN, (row["id"], "w1", "runway", 600))
    assert deliver(conn, row["id"], "req-fal") == "orphan"
    state = conn.execute(
        "select status, provider, provider_task_id, provider_status from public.video_jobs where id = %s",
        (row["id"],),
    ).fetchone()
    assert state == ("queued", "runway", None, "submission_uncertain"), "still waiting for runway's task"


def test_a_failed_request_for_a_queued_job_not_waiting_for_one_is_an_orphan(conn):
    row, _ = job(conn)
    assert deliver(conn, row["id"], "req-old", "ERROR", {"error": "Invalid status code: 500"}) == "orphan"
    assert conn.execute("select status from public.video_jobs where id = %s", (row["id"],)).fetchone() == ("queued",)


def test_a_delivery_for_a_job_that_does_not_exist_records_nothing(conn):
    assert deliver(conn, uuid.uuid4(), "req-x") == "unknown_job"
    assert deliveries(conn, "req-x") == []


def test_a_submission_is_counted_even_when_the_worker_lost_the_job(conn):
    row, user = job(conn)
    claim(conn, "w1", lease=1)
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 s' where id = %s", (row["id"],))
    assert service(conn, SUBMITTED, (row["id"], "w1", "fal", "req-late", "IN_QUEUE"))[0]["outcome"] == "refused"
    with as_user(conn, user) as cur:
        cur.execute("select public.cancel_video_job(%s)", (row["id"],))
    assert service(conn, SUBMITTED, (row["id"], "w1", "fal", "req-later", "IN_QUEUE"))[0]["outcome"] == "refused"
    counts = conn.execute(
        "select status, provider_task_id, provider_submissions from public.video_jobs where id = %s", (row["id"],)
    ).fetchone()
    assert counts == ("canceled", None, 2)


def test_an_uncertain_submission_by_a_worker_without_the_lease_is_counted_only(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    after = service(conn, UNCERTAIN, (row["id"], "w2", "fal", 600))[0]
    assert (after["locked_by"], after["provider_status"], after["uncertain_submissions"]) == ("w1", None, 1)


def test_a_lease_without_an_end_is_nobodys_so_neither_record_takes_the_job(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    conn.execute("update public.video_jobs set locked_until = null where id = %s", (row["id"],))
    assert service(conn, SUBMITTED, (row["id"], "w1", "fal", "req-1", "IN_QUEUE"))[0]["outcome"] == "refused"
    after = service(conn, UNCERTAIN, (row["id"], "w1", "fal", 600))[0]
    assert (after["status"], after["provider_task_id"], after["provider_status"]) == ("queued", None, None)
    assert (after["provider_submissions"], after["uncertain_submissions"]) == (2, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, "fal", "r", "OK", {}), "p_job_id"),
        ((uuid.uuid4(), "kling", "r", "OK", {}), "unknown provider"),
        ((uuid.uuid4(), "fal", "", "OK", {}), "request id"),
        ((uuid.uuid4(), "fal", "r" * 256, "OK", {}), "request id"),
        ((uuid.uuid4(), "fal", "r", "DONE", {}), "OK or ERROR"),
        ((uuid.uuid4(), "fal", "r", "OK", [1]), "JSON object"),
    ],
)
def test_record_delivery_refuses_bad_arguments(conn, args, message):
    *head, body = args
    with raises_sqlstate("22023", message):
        service(conn, RECORD, (*head, psycopg.types.json.Jsonb(body)))


@pytest.mark.parametrize(
    ("query", "args", "message"),
    [
        (SUBMITTED, ("w1", "kling", "t", "S"), "unknown provider"),
        (SUBMITTED, ("w1", "fal", "", "S"), "task id"),
        (SUBMITTED, ("a b", "fal", "t", "S"), "worker id"),
        (UNCERTAIN, ("w1", "fal", -1), "wait"),
        (UNCERTAIN, ("w1", "fal", 86401), "wait"),
        (UNCERTAIN, ("w1", None, 1), "unknown provider"),
    ],
)
def test_submission_records_refuse_bad_arguments(conn, query, args, message):
    row, _ = job(conn)
    with raises_sqlstate("22023", message):
        service(conn, query, (row["id"], *args))


@pytest.mark.parametrize("query", [SUBMITTED, UNCERTAIN])
def test_submission_records_of_a_missing_job_are_refused(conn, query):
    args = ("w1", "fal", "t", "S") if query == SUBMITTED else ("w1", "fal", 1)
    with raises_sqlstate("PT404"):
        service(conn, query, (uuid.uuid4(), *args))


@pytest.mark.parametrize(
    ("query", "args"),
    [
        (RECORD, ("fal", "req-1", "OK", psycopg.types.json.Jsonb(OK))),
        (GET, ()),
        (SUBMITTED, ("w1", "fal", "req-forged", "COMPLETED")),
        (UNCERTAIN, ("w1", "fal", 0)),
    ],
)
def test_a_user_cannot_forge_a_delivery_or_a_submission_for_their_own_job(conn, query, args):
    job_id, user = running_job(conn)
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute(query, (job_id, *args))


def test_a_user_can_read_neither_deliveries_nor_write_the_counters(conn):
    job_id, user = running_job(conn)
    deliver(conn, job_id, "req-1")
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute("select * from vidanim_private.video_provider_deliveries")
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute("update public.video_jobs set provider_submissions = 0 where id = %s", (job_id,))


def test_a_failed_request_at_fal_is_not_adopted_by_a_job_whose_lost_answer_was_runways(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    service(conn, UNCERTAIN, (row["id"], "w1", "runway", 600))  # Runway's answer was lost, not fal's
    assert deliver(conn, row["id"], "req-fal", "ERROR", {"error": "Invalid status code: 500"}) == "orphan"
    state = conn.execute(
        "select status, provider, provider_task_id, provider_status from public.video_jobs where id = %s", (row["id"],)
    ).fetchone()
    assert state == ("queued", "runway", None, "submission_uncertain"), "the job still waits for Runway's task"


# URL tokens (0034) -----------------------------------------------------------------------
ISSUE = "select public.issue_video_webhook_token(%s, %s, %s, %s, %s) as expires_at"
VALID = "select public.video_webhook_token_valid(%s, %s) as valid"
RECORD_WITH_TOKEN = "select public.record_video_provider_delivery(%s, %s, %s, %s, %s, %s) as outcome"


def issue(conn, job_id, worker="w1", provider="fal", ttl=600.0):
    token = hashlib.sha256(uuid.uuid4().bytes).digest()
    service(conn, ISSUE, (job_id, worker, provider, token, ttl))
    return token


def valid(conn, job_id, token) -> bool:
    return bool(service(conn, VALID, (job_id, token))[0]["valid"])


def deliver_with(conn, job_id, token, request_id, provider="fal"):
    body = psycopg.types.json.Jsonb({"request_id": request_id, **OK})
    (row,) = service(conn, RECORD_WITH_TOKEN, (job_id, provider, request_id, "OK", body, token))
    return row["outcome"]


def expire_in(conn, token, seconds: float) -> None:
    conn.execute(
        "update vidanim_private.video_webhook_tokens set expires_at = now() + make_interval(secs => %s)"
        " where token_hash = %s",
        (seconds, token),
    )


def test_a_token_is_valid_for_its_job_only_and_only_its_hash_is_kept(conn):
    row, _ = job(conn)
    other, _ = job(conn)
    claim(conn, "w1", limit=2)
    token = issue(conn, row["id"])
    assert valid(conn, row["id"], token)
    assert not valid(conn, other["id"], token), "another job's token"
    assert not valid(conn, row["id"], hashlib.sha256(b"guessed").digest())
    stored = conn.execute("select token_hash, job_id from vidanim_private.video_webhook_tokens").fetchall()
    assert [(bytes(h), j) for h, j in stored] == [(token, row["id"])]


def test_a_token_is_valid_until_its_expiry_and_not_after(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    token = issue(conn, row["id"])
    expire_in(conn, token, 1.0)
    assert valid(conn, row["id"], token), "a second before its expiry"
    assert deliver_with(conn, row["id"], token, "req-1") == "orphan"
    expire_in(conn, token, -0.001)
    assert not valid(conn, row["id"], token), "a millisecond after"
    assert deliver_with(conn, row["id"], token, "req-1") == "refused_token"
    assert deliveries(conn, "req-1") == [("orphan", 1)], "the refused one was not counted"


def test_a_first_submissions_token_does_not_carry_the_next_ones_deliveries_after_it_expires(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    first = issue(conn, row["id"])
    service(conn, UNCERTAIN, (row["id"], "w1", "fal", 0))
    claim(conn, "w1")
    second = issue(conn, row["id"])
    expire_in(conn, first, -1)
    assert not valid(conn, row["id"], first)
    assert deliver_with(conn, row["id"], first, "req-2") == "refused_token"
    assert deliver_with(conn, row["id"], second, "req-2") == "adopted"


def test_a_token_reports_one_request_at_most(conn):
    row, _ = job(conn)
    claim(conn, "w1")
    token = issue(conn, row["id"])
    service(conn, UNCERTAIN, (row["id"], "w1", "fal", 600))
    assert deliver_with(conn, row["id"], token, "req-1") == "adopted"
    assert deliver_with(conn, row["id"], token, "req-1") == "duplicate", "fal delivers at least once"
    assert deliver_with(conn, row["id"], token, "req-other") == "refused_token"
    assert deliver_with(conn, row["id"], token, "req-1", provider="runway") == "refused_token", "issued for fal"
    assert deliveries(conn, "req-other") == []


def test_only_the_worker_holding_the_queued_job_issues_a_token(conn):
    row, _ = job(conn)
    with raises_sqlstate("PT409"):
        issue(conn, row["id"])  # nobody holds it
    claim(conn, "w1")
    with raises_sqlstate("PT409"):
        issue(conn, row["id"], worker="w2")
    with raises_sqlstate("PT404"):
        issue(conn, uuid.uuid4())


@pytest.mark.parametrize(
    ("token", "ttl", "message"),
    [
        (b"short", 60, "32 bytes"),
        (None, 60, "32 bytes"),
        (b"x" * 32, 0, "token lives"),
        (b"x" * 32, 1e9, "token lives"),
    ],
)
def test_issue_token_refuses_bad_arguments(conn, token, ttl, message):
    row, _ = job(conn)
    claim(conn, "w1")
    with raises_sqlstate("22023", message):
        service(conn, ISSUE, (row["id"], "w1", "fal", token, ttl))


@pytest.mark.parametrize(
    ("query", "args"),
    [
        (ISSUE, ("w1", "fal", b"x" * 32, 60)),
        (VALID, (b"x" * 32,)),
        (RECORD_WITH_TOKEN, ("fal", "req-1", "OK", psycopg.types.json.Jsonb(OK), b"x" * 32)),
    ],
)
def test_a_user_can_neither_issue_nor_check_nor_use_a_token(conn, query, args):
    job_id, user = running_job(conn)
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute(query, (job_id, *args))
    with raises_sqlstate("42501"), as_user(conn, user) as cur:
        cur.execute("select * from vidanim_private.video_webhook_tokens")
