"""The job state machine holds for every writer, the service function included."""

from __future__ import annotations

import uuid

import pytest

from tests.db.helpers import claim, job_row, raises_sqlstate, request_job, service, update_status
from tests.support.seed import create_user, put_input_image, put_object


@pytest.fixture
def job(conn):
    user = create_user(conn)
    return request_job(conn, user, put_input_image(conn, user))


def _processing(conn, job, worker="w1", task="task-1"):
    claim(conn, worker)
    return update_status(
        conn,
        job["id"],
        "processing",
        provider="fal",
        provider_task_id=task,
        provider_status="IN_QUEUE",
        worker_id=worker,
    )


def _output(conn, job):
    path = f"{job['user_id']}/{job['id']}.mp4"
    put_object(conn, "video-outputs", path, mimetype="video/mp4")
    return path


ILLEGAL_DIRECT = [
    ("queued", "completed"),
    ("processing", "processing-other-task"),
    ("completed", "queued"),
    ("completed", "failed"),
    ("failed", "processing"),
    ("failed", "queued"),
    ("canceled", "queued"),
    ("canceled", "completed"),
]


def _reach(conn, job, status):
    if status == "queued":
        return
    if status == "processing":
        _processing(conn, job)
    elif status == "completed":
        _processing(conn, job)
        update_status(conn, job["id"], "completed", output_video_path=_output(conn, job))
    elif status in ("failed", "canceled"):
        update_status(conn, job["id"], status)


@pytest.mark.parametrize(("start", "target"), ILLEGAL_DIRECT)
def test_illegal_transitions_fail_even_for_a_superuser_update(conn, job, start, target):
    _reach(conn, job, start)
    if target == "processing-other-task":
        statement = "update public.video_jobs set provider_task_id = 'task-2' where id = %s"
    else:
        statement = (
            f"update public.video_jobs set status = '{target}', provider_task_id = coalesce(provider_task_id, 't'),"
            " output_video_path = coalesce(output_video_path, 'x') where id = %s"
        )
    with raises_sqlstate("PT409"):
        conn.execute(statement, (job["id"],))
    assert job_row(conn, job["id"])["status"] == start


@pytest.mark.parametrize(
    "column_change",
    [
        "user_id = gen_random_uuid()",
        "input_image_path = 'x/y.png'",
        "prompt = 'other'",
        "options = '{\"a\": 1}'",
        "quota_day = quota_day - 1",
        "client_request_id = 'forged'",
        "created_at = now() - interval '1 day'",
        "quota_refunded_at = now()",
    ],
)
def test_the_request_itself_never_changes(conn, job, column_change):
    with raises_sqlstate("PT409"):
        conn.execute(f"update public.video_jobs set {column_change} where id = %s", (job["id"],))


def test_the_full_happy_path_records_a_timeline(conn, job):
    _processing(conn, job)
    update_status(conn, job["id"], "processing", provider_status="IN_PROGRESS", worker_id="w1")
    done = update_status(
        conn, job["id"], "completed", output_video_path=_output(conn, job), provider_status="COMPLETED", worker_id="w1"
    )
    assert done["status"] == "completed"
    assert done["completed_at"] is not None
    assert done["started_at"] is not None
    assert (done["locked_by"], done["locked_until"]) == (None, None)
    events = conn.execute(
        "select status, provider, provider_status from public.video_job_events where job_id = %s order by id",
        (job["id"],),
    ).fetchall()
    assert events == [
        ("queued", None, None),
        ("processing", "fal", "IN_QUEUE"),
        ("processing", "fal", "IN_PROGRESS"),
        ("completed", "fal", "COMPLETED"),
    ]


def test_lease_only_changes_leave_the_timeline_alone(conn, job):
    claim(conn, "w1")
    service(conn, "select * from public.renew_video_job_leases('w1', array[%s]::uuid[], 60)", (job["id"],))
    assert conn.execute("select count(*) from public.video_job_events where job_id = %s", (job["id"],)).fetchone() == (
        1,
    )


def test_updated_at_moves_on_every_update(conn, job):
    before = job_row(conn, job["id"])["updated_at"]
    conn.execute("update public.video_jobs set locked_by = 'x' where id = %s", (job["id"],))
    assert job_row(conn, job["id"])["updated_at"] > before


def test_processing_requires_a_provider_task_id_and_provider(conn, job):
    claim(conn, "w1")
    with raises_sqlstate("22023", "provider task id"):
        update_status(conn, job["id"], "processing", provider="fal", worker_id="w1")
    with raises_sqlstate("22023", "requires a provider"):
        update_status(conn, job["id"], "processing", provider_task_id="t", worker_id="w1")
    with raises_sqlstate("23514"):
        conn.execute("update public.video_jobs set status = 'processing' where id = %s", (job["id"],))


def test_completed_requires_the_exact_output_path_and_an_existing_object(conn, job):
    _processing(conn, job)
    expected = f"{job['user_id']}/{job['id']}.mp4"
    with raises_sqlstate("22023", "output_video_path must be"):
        update_status(conn, job["id"], "completed")
    with raises_sqlstate("22023", "output_video_path must be"):
        update_status(conn, job["id"], "completed", output_video_path=f"{job['user_id']}/other.mp4")
    with raises_sqlstate("22023", "output_video_path must be"):
        update_status(conn, job["id"], "completed", output_video_path=f"{uuid.uuid4()}/{job['id']}.mp4")
    with raises_sqlstate("PT404", "does not exist"):
        update_status(conn, job["id"], "completed", output_video_path=expected)
    with raises_sqlstate("22023", "only recorded with status completed"):
        update_status(conn, job["id"], "failed", output_video_path=expected)
    with raises_sqlstate("23514"):
        conn.execute("update public.video_jobs set status = 'completed' where id = %s", (job["id"],))
    put_object(conn, "video-outputs", expected, mimetype="video/mp4")
    assert update_status(conn, job["id"], "completed", output_video_path=expected)["status"] == "completed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "done"}, "unknown job status"),
        ({"status": None}, "unknown job status"),
        ({"status": "failed", "provider": "openai"}, "unknown provider"),
        ({"status": "failed", "provider_task_id": ""}, "1-255"),
        ({"status": "failed", "provider_task_id": "t" * 256}, "1-255"),
        ({"status": "failed", "provider_status": "s" * 256}, "255"),
        ({"status": "failed", "error_code": "e" * 256}, "255"),
    ],
)
def test_service_update_rejects_malformed_input(conn, job, kwargs, message):
    kwargs = dict(kwargs)
    status = kwargs.pop("status")
    with raises_sqlstate("22023", message):
        update_status(conn, job["id"], status, **kwargs)


def test_service_update_of_an_unknown_job_is_pt404(conn):
    with raises_sqlstate("PT404"):
        update_status(conn, uuid.uuid4(), "failed")
    with raises_sqlstate("22023"):
        update_status(conn, None, "failed")


def test_a_long_error_message_is_kept_truncated_rather_than_lost(conn, job):
    failed = update_status(conn, job["id"], "failed", error_code="x", error_message="m" * 5000)
    assert failed["error_message"] == "m" * 2000


def test_a_worker_without_the_lease_cannot_record_a_provider_task(conn, job):
    claim(conn, "w1")
    with raises_sqlstate("PT409", "does not hold the lease"):
        update_status(conn, job["id"], "processing", provider="fal", provider_task_id="dup", worker_id="w2")
    conn.execute("update public.video_jobs set locked_until = now() - interval '1 second' where id = %s", (job["id"],))
    with raises_sqlstate("PT409", "does not hold the lease"):
        update_status(conn, job["id"], "processing", provider="fal", provider_task_id="late", worker_id="w1")
    assert job_row(conn, job["id"])["provider_task_id"] is None


def test_a_second_provider_task_never_replaces_the_first(conn, job):
    _processing(conn, job, task="first")
    with raises_sqlstate("PT409", "already runs as"):
        update_status(conn, job["id"], "processing", provider="runway", provider_task_id="second", worker_id="w1")
    assert job_row(conn, job["id"])["provider_task_id"] == "first"


def test_a_retry_puts_the_job_back_to_queued_with_a_delay_and_no_task(conn, job):
    _processing(conn, job)
    retried = service(
        conn,
        "select * from public.schedule_video_job_retry(%s, 'w1', 30, 'provider_5xx', 'fal answered 503')",
        (job["id"],),
    )[0]
    assert retried["status"] == "queued"
    assert retried["provider_task_id"] is None
    assert retried["locked_by"] is None
    assert retried["error_code"] == "provider_5xx"
    assert claim(conn, "w2") == []  # not due yet
    conn.execute("update public.video_jobs set next_attempt_at = now() where id = %s", (job["id"],))
    again = claim(conn, "w2")
    assert [j["id"] for j in again] == [job["id"]]
    assert again[0]["attempts"] == 2
    done = update_status(conn, job["id"], "processing", provider="runway", provider_task_id="r1", worker_id="w2")
    assert done["provider"] == "runway"


def test_retry_needs_the_lease_and_valid_input(conn, job):
    _processing(conn, job)
    with raises_sqlstate("PT409"):
        service(conn, "select * from public.schedule_video_job_retry(%s, 'w2', 1)", (job["id"],))
    with raises_sqlstate("22023"):
        service(conn, "select * from public.schedule_video_job_retry(%s, 'w1', -1)", (job["id"],))
    with raises_sqlstate("PT404"):
        service(conn, "select * from public.schedule_video_job_retry(%s, 'w1', 1)", (uuid.uuid4(),))
