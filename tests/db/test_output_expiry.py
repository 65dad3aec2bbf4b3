"""Output expiry: old videos can go, and no job ever points at a missing one."""

from __future__ import annotations

import pytest

from tests.db.helpers import claim, job_row, raises_sqlstate, request_job, service, update_status
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image, put_object


def _completed(conn, user, age_days):
    job = request_job(conn, user, put_input_image(conn, user, f"{age_days}.png"))
    claim(conn, "w")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t", worker_id="w")
    path = f"{user}/{job['id']}.mp4"
    put_object(conn, "video-outputs", path, mimetype="video/mp4")
    update_status(conn, job["id"], "completed", output_video_path=path, worker_id="w")
    conn.execute(
        "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
        f" update public.video_jobs set completed_at = now() - interval '{age_days} days' where id = '{job['id']}';"
        " alter table public.video_jobs enable trigger video_jobs_enforce_transition"
    )
    return job


def test_expiry_marks_only_old_completed_jobs_and_keeps_them_readable(conn):
    user = create_user(conn)
    old, new = _completed(conn, user, 40), _completed(conn, user, 2)
    queued = request_job(conn, user, put_input_image(conn, user, "q.png"))
    expired = service(conn, "select * from public.expire_video_outputs(interval '30 days')")
    assert [j["id"] for j in expired] == [old["id"]]
    row = job_row(conn, old["id"])
    assert (row["status"], row["output_video_path"]) == ("completed", None)
    assert row["output_expired_at"] is not None
    assert job_row(conn, new["id"])["output_video_path"] is not None
    assert job_row(conn, queued["id"])["output_expired_at"] is None
    with as_user(conn, user) as cur:
        cur.execute("select id, output_expired_at from public.video_jobs where id = %s", (old["id"],))
        assert cur.fetchone()["output_expired_at"] is not None
    assert service(conn, "select * from public.expire_video_outputs(interval '30 days')") == []


def test_an_expired_job_cannot_get_its_path_back_or_change_otherwise(conn):
    user = create_user(conn)
    old = _completed(conn, user, 40)
    service(conn, "select * from public.expire_video_outputs(interval '30 days')")
    with raises_sqlstate("PT409"):
        conn.execute("update public.video_jobs set output_video_path = 'x' where id = %s", (old["id"],))
    with raises_sqlstate("PT409"):
        conn.execute("update public.video_jobs set output_expired_at = null where id = %s", (old["id"],))


def test_only_a_completed_job_may_drop_its_output(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    update_status(conn, job["id"], "failed")
    with raises_sqlstate("PT409"):
        conn.execute("update public.video_jobs set output_expired_at = now() where id = %s", (job["id"],))
    with raises_sqlstate("23514"):
        conn.execute(
            "alter table public.video_jobs disable trigger video_jobs_enforce_transition;"
            f" update public.video_jobs set status = 'completed' where id = '{job['id']}'"
        )


@pytest.mark.parametrize(
    ("args", "message"), [("interval '-1 day', 10", "non-negative"), ("interval '1 day', 0", "p_limit")]
)
def test_expiry_rejects_bad_arguments(conn, args, message):
    with raises_sqlstate("22023", message):
        service(conn, f"select * from public.expire_video_outputs({args})")


def test_a_job_whose_video_was_not_deleted_gets_its_output_back_once(conn):
    user = create_user(conn)
    old = _completed(conn, user, 40)
    service(conn, "select * from public.expire_video_outputs(interval '30 days')")
    (restored,) = service(conn, "select * from public.restore_video_output(%s)", (old["id"],))
    assert (restored["output_video_path"], restored["output_expired_at"]) == (f"{user}/{old['id']}.mp4", None)
    with raises_sqlstate("PT404", "not a completed job whose output expired"):
        service(conn, "select * from public.restore_video_output(%s)", (old["id"],))


def test_restore_gives_back_only_the_jobs_own_path(conn):
    user = create_user(conn)
    old = _completed(conn, user, 40)
    service(conn, "select * from public.expire_video_outputs(interval '30 days')")
    with raises_sqlstate("PT409"):
        conn.execute(
            "update public.video_jobs set output_video_path = %s, output_expired_at = null where id = %s",
            (f"{user}/someone-else.mp4", old["id"]),
        )
    queued = request_job(conn, user, put_input_image(conn, user, "q.png"))
    with raises_sqlstate("PT404"):
        service(conn, "select * from public.restore_video_output(%s)", (queued["id"],))
