"""Supabase Realtime: video_jobs is in the supabase_realtime publication, and its changes decode from it."""

from __future__ import annotations

import uuid

import pytest

from tests.db.helpers import claim, request_job, service, update_status
from tests.support.postgrest import as_user
from tests.support.seed import create_user, put_input_image


def test_the_realtime_publication_holds_video_jobs(conn):
    rows = conn.execute(
        "select schemaname, tablename from pg_publication_tables where pubname = 'supabase_realtime'"
    ).fetchall()
    assert rows == [("public", "video_jobs")]


def test_a_jobs_changes_reach_a_logical_decoding_slot_on_the_publication(conn):
    if conn.execute("select current_setting('wal_level')").fetchone() != ("logical",):
        pytest.skip("this server does not run with wal_level=logical (the embedded one does)")
    # Decoding reads flushed WAL only: this session's commits are flushed at once.
    conn.execute("set synchronous_commit = on")
    slot = f"vidanim_realtime_{uuid.uuid4().hex[:8]}"
    conn.execute("select pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        user = create_user(conn)
        job = request_job(conn, user, put_input_image(conn, user))
        claim(conn, "w1")
        update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
        changes = [
            bytes(r[0])
            for r in conn.execute(
                "select data from pg_logical_slot_peek_binary_changes(%s, null, null,"
                " 'proto_version', '1', 'publication_names', 'supabase_realtime')",
                (slot,),
            ).fetchall()
        ]
    finally:
        conn.execute("select pg_drop_replication_slot(%s)", (slot,))
    kinds = [c[:1] for c in changes]
    relations = [c for c in changes if c[:1] == b"R"]
    assert relations, "a relation message for the published table"
    assert all(b"video_jobs" in r for r in relations), "only video_jobs is published"
    assert b"I" in kinds, "the new job"
    assert kinds.count(b"U") >= 2, "the claim and the status change"
    assert any(str(job["id"]).encode() in c for c in changes if c[:1] in (b"I", b"U"))


MESSAGES = "select topic, event, extension, private, payload from realtime.messages order by inserted_at, id"


def join_sees(conn, user, topic: str) -> int:
    """What Realtime's join check finds: as the joining user, with `realtime.topic` set, the
    broadcast messages of the topic it may read (none: the join is refused)."""
    with as_user(conn, user) as cur:
        cur.execute("select set_config('realtime.topic', %s, true)", (topic,))
        cur.execute("select count(*) as n from realtime.messages where topic = realtime.topic()")
        return int(cur.fetchone()["n"])


def test_a_jobs_changes_are_broadcast_to_its_owners_private_topic_with_the_row(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    update_status(conn, job["id"], "processing", provider="fal", provider_task_id="t1", worker_id="w1")
    rows = conn.execute(MESSAGES).fetchall()
    topic = f"user:{user}:jobs"
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(topic, "UPDATE", "broadcast", True)], (
        "the request answers with its row and the claim changes nothing a user watches: only the status change"
    )
    (updated,) = (r[4] for r in rows)
    assert (updated["operation"], updated["table"], updated["schema"]) == ("UPDATE", "video_jobs", "public")
    assert updated["record"]["id"] == str(job["id"])
    assert (updated["record"]["status"], updated["record"]["provider_status"]) == ("processing", None)
    assert updated["old_record"]["status"] == "queued"
    assert updated["record"]["user_id"] == str(user)


def test_a_lease_renewal_sends_no_broadcast(conn):
    user = create_user(conn)
    job = request_job(conn, user, put_input_image(conn, user))
    claim(conn, "w1")
    (before,) = conn.execute("select count(*) from realtime.messages").fetchone()
    service(conn, "select * from public.renew_video_job_leases('w1', %s, 300)", ([job["id"]],))
    (after,) = conn.execute("select count(*) from realtime.messages").fetchone()
    assert after == before


def test_only_the_owner_may_join_its_jobs_topic_and_a_stranger_is_refused(conn):
    owner, stranger = create_user(conn), create_user(conn)
    for user in (owner, stranger):
        job = request_job(conn, user, put_input_image(conn, user))
        claim(conn, "w1")
        update_status(conn, job["id"], "processing", provider="fal", provider_task_id=f"t-{user}", worker_id="w1")
    assert join_sees(conn, owner, f"user:{owner}:jobs") == 1, "the owner joins its topic"
    assert join_sees(conn, stranger, f"user:{owner}:jobs") == 0, "another user's join is refused"
    assert join_sees(conn, stranger, f"user:{stranger}:jobs") == 1, "the stranger joins its own"
    assert join_sees(conn, owner, f"user:{stranger}:jobs") == 0
