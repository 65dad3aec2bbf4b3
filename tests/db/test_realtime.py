"""Supabase Realtime: video_jobs is in the supabase_realtime publication, and its changes decode from it."""

from __future__ import annotations

import uuid

import pytest

from tests.db.helpers import claim, request_job, update_status
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
