"""Storage: private buckets and folder policies, as the Storage server applies them.

The Storage server writes storage.objects with the user's role and claims set
locally (like PostgREST), so inserting and selecting rows here as the user is what
an upload, a download or a signed-URL request does.
"""

from __future__ import annotations

import pytest

from tests.db.helpers import raises_sqlstate
from tests.support.postgrest import as_anon, as_service, as_user
from tests.support.seed import create_user, put_object

INSERT = "insert into storage.objects (bucket_id, name, owner_id) values (%s, %s, %s)"


@pytest.fixture
def users(conn):
    return create_user(conn), create_user(conn)


def test_both_buckets_are_private_and_typed(conn):
    rows = conn.execute(
        "select id, public, file_size_limit, allowed_mime_types from storage.buckets order by id"
    ).fetchall()
    assert rows == [
        ("video-inputs", False, 10 * 1024 * 1024, ["image/png", "image/jpeg", "image/webp"]),
        ("video-outputs", False, 2 * 1024**3, ["video/mp4"]),
    ]


def test_migrations_make_a_bucket_private_again(db, conn):
    from vidanim.db.migrate import discover

    conn.execute("update storage.buckets set public = true")
    (buckets,) = [m for m in discover() if m.name == "storage_buckets"]
    conn.execute(buckets.sql())
    assert conn.execute("select bool_or(public) from storage.buckets").fetchone() == (False,)


def test_a_user_uploads_into_its_own_folder_of_video_inputs(conn, users):
    alice, _ = users
    with as_user(conn, alice) as cur:
        cur.execute(INSERT, ("video-inputs", f"{alice}/sub/cat.PNG", str(alice)))
        cur.execute("select name from storage.objects")
        assert [r["name"] for r in cur.fetchall()] == [f"{alice}/sub/cat.PNG"]


@pytest.mark.parametrize(
    "name",
    [
        "{bob}/cat.png",
        "cat.png",
        "{alice}/../{bob}/cat.png",
        "{alice}/./cat.png",
        "{alice}//cat.png",
        "{alice}/cat.gif",
        "{alice}/cat",
        "{alice}\\cat.png",
        "/{alice}/cat.png",
        "{alice}/..",
        "../{alice}/x.png",
    ],
)
def test_uploads_outside_the_users_folder_or_with_path_tricks_are_refused(conn, users, name):
    alice, bob = users
    with raises_sqlstate("42501", "row-level security"), as_user(conn, alice) as cur:
        cur.execute(INSERT, ("video-inputs", name.format(alice=alice, bob=bob), str(alice)))


def test_users_cannot_write_outputs_even_in_their_own_folder(conn, users):
    alice, _ = users
    with raises_sqlstate("42501"), as_user(conn, alice) as cur:
        cur.execute(INSERT, ("video-outputs", f"{alice}/x.mp4", str(alice)))


def test_users_read_only_their_own_objects_in_both_buckets(conn, users):
    alice, bob = users
    put_object(conn, "video-inputs", f"{alice}/a.png", owner=alice)
    put_object(conn, "video-outputs", f"{alice}/j.mp4", owner=None, mimetype="video/mp4")
    put_object(conn, "video-inputs", f"{bob}/b.png", owner=bob)
    put_object(conn, "video-outputs", f"{bob}/k.mp4", owner=None, mimetype="video/mp4")
    with as_user(conn, alice) as cur:
        cur.execute("select bucket_id, name from storage.objects order by bucket_id")
        assert [(r["bucket_id"], r["name"]) for r in cur.fetchall()] == [
            ("video-inputs", f"{alice}/a.png"),
            ("video-outputs", f"{alice}/j.mp4"),
        ]
    with as_anon(conn) as cur:
        cur.execute("select count(*) as n from storage.objects")
        assert cur.fetchone() == {"n": 0}


def test_a_user_deletes_and_replaces_only_its_own_inputs(conn, users):
    alice, bob = users
    put_object(conn, "video-inputs", f"{alice}/a.png", owner=alice)
    put_object(conn, "video-inputs", f"{bob}/b.png", owner=bob)
    put_object(conn, "video-outputs", f"{alice}/j.mp4", mimetype="video/mp4")
    with as_user(conn, alice) as cur:
        cur.execute("set local storage.allow_delete_query = 'true'")
        cur.execute("delete from storage.objects where name like %s", (f"{bob}/%",))
        assert cur.rowcount == 0
        cur.execute("delete from storage.objects where bucket_id = 'video-outputs'")
        assert cur.rowcount == 0
        cur.execute("update storage.objects set updated_at = now() where name = %s", (f"{bob}/b.png",))
        assert cur.rowcount == 0
        cur.execute("update storage.objects set updated_at = now() where name = %s", (f"{alice}/a.png",))
        assert cur.rowcount == 1
        cur.execute("delete from storage.objects where name = %s", (f"{alice}/a.png",))
        assert cur.rowcount == 1
    with raises_sqlstate("42501"), as_user(conn, alice) as cur:
        cur.execute("update storage.objects set name = %s where name = %s", (f"{bob}/stolen.png", f"{alice}/nope"))
        cur.execute("insert into storage.objects (bucket_id, name) values ('video-inputs', %s)", (f"{bob}/x.png",))


def test_a_user_cannot_move_its_object_into_another_folder(conn, users):
    alice, bob = users
    put_object(conn, "video-inputs", f"{alice}/a.png", owner=alice)
    with raises_sqlstate("42501"), as_user(conn, alice) as cur:
        cur.execute("update storage.objects set name = %s where name = %s", (f"{bob}/a.png", f"{alice}/a.png"))


def test_direct_deletes_without_the_storage_servers_flag_are_refused(conn, users):
    alice, _ = users
    put_object(conn, "video-inputs", f"{alice}/a.png", owner=alice)
    with raises_sqlstate("42501", "Direct deletion"), as_service(conn) as cur:
        cur.execute("delete from storage.objects")


def test_a_user_cannot_rename_its_objects_into_another_folder_with_an_unfiltered_update(conn, users):
    # No WHERE clause: Postgres then checks the new row against the UPDATE policy's
    # `with check` alone (the SELECT policy applies only when the statement reads
    # the table), so the folder check in `with check` is the only thing in the way.
    alice, bob = users
    put_object(conn, "video-inputs", f"{alice}/a.png", owner=alice)
    with raises_sqlstate("42501", "row-level security"), as_user(conn, alice) as cur:
        cur.execute("update storage.objects set name = %s", (f"{bob}/x.png",))
    names = [r[0] for r in conn.execute("select name from storage.objects").fetchall()]
    assert names == [f"{alice}/a.png"]
