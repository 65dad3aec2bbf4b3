"""SupabaseStorage against a stand-in that behaves as the real Storage server does, over real HTTP.

Each behaviour of the real server (docs/storage.md) is shown on the stand-in first,
with a raw HTTP client, so the stand-in cannot drift into fiction; then that
SupabaseStorage copes with it.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.fake_supabase_storage import FakeSupabaseStorage
from tests.support.seed import create_user, put_object
from vidanim.simulator.media import mp4_chunks
from vidanim.storage import ObjectExists, StorageError
from vidanim.storage.supabase import SupabaseStorage, encode_signed_path

STALL = 1.5  # seconds the stand-in holds a connection it stopped reading (the real server: about 62)


@pytest.fixture
def fake(db):
    with FakeSupabaseStorage(db.dsn, stall_seconds=STALL) as f:
        yield f


@pytest.fixture
async def storage(fake):
    s = SupabaseStorage(supabase_url=fake.url, service_role_key=fake.service_key)
    yield s
    await s.aclose()


async def _stream(size):
    for chunk in mp4_chunks(size, chunk=64 * 1024):
        yield chunk


def _raw(fake, method, path, *, key=None, **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, f"{fake.url}/storage/v1/object/{path}", headers=headers, timeout=10, **kwargs)


def _put(fake, path, content) -> httpx.Response:
    """An upload of a video with the service key, as the worker sends one."""
    return _raw(fake, "POST", path, key=fake.service_key, content=content, headers={"Content-Type": "video/mp4"})


# The stand-in behaves as the real server --------------------------------------------------
def test_errors_are_http_400_with_the_real_status_and_code_in_the_body(fake):
    first = _put(fake, "video-outputs/u/j.mp4", b"\0" * 100)
    again = _put(fake, "video-outputs/u/j.mp4", b"\0" * 100)
    assert first.status_code == 200
    assert again.status_code == 400
    assert again.json() == {
        "statusCode": "409",
        "code": "KeyAlreadyExists",
        "error": "Duplicate",
        "message": "The resource already exists",
    }
    missing = _raw(fake, "POST", "sign/video-outputs/u/none.mp4", key=fake.service_key, json={"expiresIn": 60})
    assert (missing.status_code, missing.json()["statusCode"], missing.json()["code"]) == (400, "404", "NoSuchKey")


def test_a_bad_or_missing_jwt_is_refused_and_the_apikey_header_is_ignored(fake):
    bad = _raw(
        fake,
        "POST",
        "sign/video-outputs/u/j.mp4",
        key="not-a-jwt",
        json={"expiresIn": 60},
        headers={"apikey": fake.service_key},
    )
    assert (bad.status_code, bad.json()["statusCode"], bad.json()["code"]) == (400, "403", "AccessDenied")
    expired = fake.key("service_role", exp=int(time.time()) - 10)
    late = _raw(fake, "POST", "sign/video-outputs/u/j.mp4", key=expired, json={"expiresIn": 60})
    assert (late.json()["statusCode"], late.json()["message"]) == ("403", "jwt expired")
    none = _raw(
        fake, "POST", "sign/video-outputs/u/j.mp4", json={"expiresIn": 60}, headers={"apikey": fake.service_key}
    )
    assert (none.json()["statusCode"], none.json()["code"]) == ("400", "InvalidRequest")


def test_the_info_route_runs_a_bad_key_as_anon_but_the_authenticated_route_refuses_it(fake):
    _put(fake, "video-outputs/u/j.mp4", b"\0" * 10)
    as_anon = _raw(fake, "GET", "info/video-outputs/u/j.mp4", key="wrong")
    assert as_anon.json() == {
        "statusCode": "404",
        "code": "NoSuchBucket",
        "error": "Bucket not found",
        "message": "Bucket not found",
    }
    refused = _raw(fake, "GET", "info/authenticated/video-outputs/u/j.mp4", key="wrong")
    assert (refused.json()["statusCode"], refused.json()["code"]) == ("403", "AccessDenied")
    found = _raw(fake, "GET", "info/authenticated/video-outputs/u/j.mp4", key=fake.service_key)
    assert (found.status_code, found.json()["size"]) == (200, 10)


def test_names_outside_the_servers_character_set_are_invalid_keys(fake):
    for name in ("u/My cat é.mp4", "u/100%.mp4", "u/猫.mp4"):
        r = _put(fake, f"video-outputs/{name}", b"\0")
        assert (r.json()["statusCode"], r.json()["code"]) == ("400", "InvalidKey"), name
    ok = _put(fake, "video-outputs/u/cat (1) & dog+more=ok.mp4", b"\0")
    assert ok.status_code == 200


def test_the_size_limit_holds_only_when_the_upload_announces_its_length(fake, db):
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = 10000 where id = 'video-outputs'")
    sized = _put(fake, "video-outputs/u/a.mp4", b"\0" * 11000)
    assert (sized.json()["statusCode"], sized.json()["code"]) == ("413", "EntityTooLarge")

    def chunked():
        yield b"\0" * 11000

    stored = _put(fake, "video-outputs/u/b.mp4", chunked())
    assert stored.status_code == 200
    assert fake.objects[("video-outputs", "u/b.mp4")].size == 11000


def test_a_delete_hidden_by_rls_answers_200_and_an_empty_list(fake, db):
    with db.connect() as conn:
        put_object(conn, "video-outputs", "u/j.mp4", mimetype="video/mp4")
    hidden = _raw(fake, "DELETE", "video-outputs", key=fake.anon_key, json={"prefixes": ["u/j.mp4"]})
    assert (hidden.status_code, hidden.json()) == (200, [])
    done = _raw(fake, "DELETE", "video-outputs", key=fake.service_key, json={"prefixes": ["u/j.mp4"]})
    assert [o["name"] for o in done.json()] == ["u/j.mp4"]


def test_a_refused_small_upload_leaves_the_connection_usable(fake):
    _put(fake, "video-outputs/u/j.mp4", b"\0" * 10)
    with httpx.Client(
        base_url=f"{fake.url}/storage/v1/object", timeout=5, headers={"Authorization": f"Bearer {fake.service_key}"}
    ) as client:
        refused = client.post("video-outputs/u/j.mp4", content=b"\0" * 50_000, headers={"Content-Type": "video/mp4"})
        after = client.get("info/authenticated/video-outputs/u/j.mp4")
    assert refused.json()["code"] == "KeyAlreadyExists"
    assert after.status_code == 200


def test_after_a_refused_large_upload_the_next_request_on_that_connection_hangs(fake):
    _put(fake, "video-outputs/u/j.mp4", b"\0" * 10)
    with httpx.Client(
        base_url=f"{fake.url}/storage/v1/object",
        timeout=STALL * 3,
        headers={"Authorization": f"Bearer {fake.service_key}"},
    ) as client:
        refused = client.post("video-outputs/u/j.mp4", content=b"\0" * 400_000, headers={"Content-Type": "video/mp4"})
        assert refused.json()["code"] == "KeyAlreadyExists", "answered before the body was read"
        started = time.monotonic()
        with pytest.raises(httpx.TransportError):
            client.get("info/authenticated/video-outputs/u/j.mp4")
    assert time.monotonic() - started >= STALL * 0.8, "the request waited for the server to drop the connection"


def test_a_refused_upload_too_large_for_the_socket_buffers_hangs_itself(fake):
    _put(fake, "video-outputs/u/j.mp4", b"\0" * 10)
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        _put(fake, "video-outputs/u/j.mp4", b"\0" * (64 * 1024 * 1024))
    assert time.monotonic() - started >= STALL * 0.8


def test_signed_urls_come_back_relative_and_not_percent_encoded(fake):
    _put(fake, "video-outputs/u/cat (1).mp4", b"\0" * 10)
    signed = _raw(fake, "POST", "sign/video-outputs/u/cat (1).mp4", key=fake.service_key, json={"expiresIn": 60})
    assert signed.json()["signedURL"].startswith("/object/sign/video-outputs/u/cat (1).mp4?token=")


# SupabaseStorage copes with it ------------------------------------------------------------
async def test_uploads_stream_with_a_content_type_and_never_overwrite(storage, fake):
    info = await storage.upload("video-outputs", "u/j.mp4", _stream(300_000), content_type="video/mp4")
    assert info.size == 300_000
    stored = fake.objects[("video-outputs", "u/j.mp4")]
    assert (stored.size, stored.content_type, stored.head[4:8]) == (300_000, "video/mp4", b"ftyp")
    assert fake.chunked_uploads == 1, "the body was streamed, not buffered to a length"
    with pytest.raises(ObjectExists) as info_exists:
        await storage.upload("video-outputs", "u/j.mp4", _stream(10_000), content_type="video/mp4")
    assert info_exists.value.code == "KeyAlreadyExists"
    assert fake.objects[("video-outputs", "u/j.mp4")].size == 300_000


async def test_a_duplicate_large_upload_is_known_as_stored_and_does_not_poison_the_next_call(storage, fake):
    await storage.upload("video-outputs", "u/j.mp4", _stream(10_000), content_type="video/mp4")
    started = time.monotonic()
    with pytest.raises(ObjectExists):
        await storage.upload("video-outputs", "u/j.mp4", _stream(500_000), content_type="video/mp4", size=500_000)
    info = await asyncio.wait_for(storage.info("video-outputs", "u/j.mp4"), STALL * 0.8)
    assert info is not None
    assert time.monotonic() - started < STALL * 0.8, "each upload has a connection of its own"


async def test_info_reads_the_real_status_from_the_body(storage):
    assert await storage.info("video-outputs", "u/missing.mp4") is None
    await storage.upload("video-outputs", "u/j.mp4", _stream(1000), content_type="video/mp4")
    info = await storage.info("video-outputs", "u/j.mp4")
    assert info is not None
    assert info.size == 1000


async def test_a_wrong_key_is_an_error_never_a_missing_object(fake):
    bad = SupabaseStorage(supabase_url=fake.url, service_role_key="wrong")
    try:
        with pytest.raises(StorageError) as info:
            await bad.info("video-inputs", "u/input.png")
        assert (info.value.status, info.value.code) == (403, "AccessDenied")
        with pytest.raises(StorageError) as signed:
            await bad.sign("video-inputs", "u/input.png", 60)
        assert signed.value.status == 403
    finally:
        await bad.aclose()


async def test_signed_urls_are_absolute_and_percent_encoded(storage, fake):
    await storage.upload("video-outputs", "u/cat (1) & co.mp4", _stream(1000), content_type="video/mp4")
    signed = await storage.sign("video-outputs", "u/cat (1) & co.mp4", 600)
    assert signed.url.startswith(
        f"{fake.url}/storage/v1/object/sign/video-outputs/u/cat%20%281%29%20%26%20co.mp4?token="
    )
    async with httpx.AsyncClient() as client:
        video = await client.get(signed.url)
    assert (video.status_code, len(video.content)) == (200, 1000)
    assert encode_signed_path("/object/sign/b/a b.mp4?token=x+y") == "/object/sign/b/a%20b.mp4?token=x+y"
    with pytest.raises(StorageError) as info:
        await storage.sign("video-outputs", "u/missing.mp4", 600)
    assert info.value.status == 404


async def test_a_wrong_type_and_a_size_over_the_limit_are_refused_with_their_codes(storage, db):
    with pytest.raises(StorageError) as info:
        await storage.upload("video-outputs", "u/j.mp4", _stream(100), content_type="text/plain")
    assert (info.value.status, info.value.code) == (415, "InvalidMimeType")
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = 1000 where id = 'video-outputs'")
    with pytest.raises(StorageError) as info:
        await storage.upload("video-outputs", "u/big.mp4", _stream(5000), content_type="video/mp4", size=5000)
    assert (info.value.status, info.value.code) == (413, "EntityTooLarge")


async def test_an_unreachable_server_is_a_storage_error():
    s = SupabaseStorage(supabase_url="http://127.0.0.1:1", service_role_key="k")
    with pytest.raises(StorageError, match="could not be reached"):
        await s.info("video-outputs", "u/j.mp4")
    await s.aclose()


async def test_delete_returns_only_what_was_deleted(storage, fake, db):
    await storage.upload("video-outputs", "u/j.mp4", _stream(100), content_type="video/mp4")
    assert await storage.delete("video-outputs", ["u/j.mp4", "u/never.mp4"]) == ["u/j.mp4"]
    assert fake.objects == {}
    with db.connect() as conn:
        put_object(conn, "video-outputs", "u/k.mp4", mimetype="video/mp4")
    anon = SupabaseStorage(supabase_url=fake.url, service_role_key=fake.anon_key)
    try:
        assert await anon.delete("video-outputs", ["u/k.mp4"]) == [], "RLS hid it: nothing was deleted"
    finally:
        await anon.aclose()


@pytest.mark.parametrize("name", ["../x.mp4", "/abs.mp4", "a//b.mp4", "a/./b.mp4", "a\\b.mp4", "a/\x00.mp4", ""])
async def test_path_tricks_never_reach_the_server(storage, fake, name):
    with pytest.raises(StorageError, match="invalid object name"):
        await storage.upload("video-outputs", name, _stream(100), content_type="video/mp4")
    with pytest.raises(StorageError, match="invalid object name"):
        await storage.sign("video-outputs", name, 60)
    assert fake.uploads == 0
    assert fake.requests == []


async def test_users_keys_upload_only_into_their_own_folder(fake, db):
    with db.connect() as conn:
        alice, bob = create_user(conn), create_user(conn)
    key = fake.key("authenticated", sub=str(alice), aud="authenticated")
    mine = _raw(
        fake, "POST", f"video-inputs/{alice}/a.png", key=key, content=b"\x89PNG", headers={"Content-Type": "image/png"}
    )
    theirs = _raw(
        fake, "POST", f"video-inputs/{bob}/a.png", key=key, content=b"\x89PNG", headers={"Content-Type": "image/png"}
    )
    assert mine.status_code == 200
    assert (theirs.json()["statusCode"], theirs.json()["code"]) == ("403", "AccessDenied")


async def test_a_missing_bucket_is_an_error_not_a_missing_object(storage, fake):
    assert await storage.info("video-outputs", "u/none.mp4") is None, "the control: a missing object"
    with pytest.raises(StorageError) as info:
        await storage.info("no-such-bucket", "u/none.mp4")
    assert (info.value.status, info.value.code) == (404, "NoSuchBucket")


def _put_image(fake, path) -> None:
    stored = _raw(fake, "POST", path, key=fake.service_key, content=b"\x89PNG", headers={"Content-Type": "image/png"})
    assert stored.status_code == 200, stored.text


# What the real server (supabase/storage v1.11.2) answered a valid anon key for an object
# that exists in a private bucket (docs/storage.md, "A key that cannot see"): RLS hides it.
HIDDEN = {"statusCode": "404", "error": "not_found", "message": "Object not found", "code": "NoSuchKey"}


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "sign/video-inputs/{name}", {"expiresIn": 60}),
        ("GET", "info/authenticated/video-inputs/{name}", None),
        ("GET", "info/video-inputs/{name}", None),
    ],
)
def test_the_stand_in_answers_an_anon_key_for_a_hidden_object_as_the_real_server_does(fake, db, method, route, body):
    name = "00000000-0000-0000-0000-000000000001/probe.png"
    _put_image(fake, f"video-inputs/{name}")
    kwargs = {"json": body} if body is not None else {}
    answer = _raw(fake, method, route.format(name=name), key=fake.anon_key, **kwargs)
    assert (answer.status_code, answer.json()) == (400, HIDDEN)
    missing = _raw(fake, method, route.format(name="nobody/none.png"), key=fake.anon_key, **kwargs)
    assert (missing.status_code, missing.json()) == (400, HIDDEN), "the same answer as for a missing object"


def test_the_stand_in_answers_an_anon_keys_delete_of_hidden_objects_200_and_an_empty_list(fake, db):
    _put(fake, "video-outputs/u/j.mp4", b"\0" * 10)
    answer = _raw(fake, "DELETE", "video-outputs", key=fake.anon_key, json={"prefixes": ["u/j.mp4"]})
    assert (answer.status_code, answer.json()) == (200, [])
    assert ("video-outputs", "u/j.mp4") in fake.objects


@pytest.fixture
async def anon_with_catalog(fake, db):
    from vidanim.storage.catalog import ObjectCatalog
    from vidanim.worker.db import open_pool

    pool = open_pool(db.dsn, size=1)
    await pool.open()
    s = SupabaseStorage(supabase_url=fake.url, service_role_key=fake.anon_key, catalog=ObjectCatalog(pool))
    yield s
    await s.aclose()
    await pool.close()


async def test_an_object_the_database_holds_but_the_key_cannot_see_is_a_key_fault_not_a_missing_object(
    anon_with_catalog, fake
):
    from vidanim.storage.supabase import HiddenObject

    _put_image(fake, "video-inputs/u/cat.png")
    with pytest.raises(HiddenObject) as signing:
        await anon_with_catalog.sign("video-inputs", "u/cat.png", 60)
    assert (signing.value.status, signing.value.code) == (403, "HiddenByKey")
    assert "is not the service role's" in str(signing.value)
    with pytest.raises(HiddenObject):
        await anon_with_catalog.info("video-inputs", "u/cat.png")


async def test_an_object_neither_storage_nor_the_database_holds_is_missing_with_a_catalog(anon_with_catalog):
    assert await anon_with_catalog.info("video-inputs", "u/none.png") is None
    with pytest.raises(StorageError) as signing:
        await anon_with_catalog.sign("video-inputs", "u/none.png", 60)
    assert signing.value.status == 404


async def test_an_object_of_the_same_name_in_another_bucket_leaves_a_missing_object_missing(anon_with_catalog, fake):
    _put(fake, "video-outputs/u/same.mp4", b"\0" * 10)
    assert await anon_with_catalog.info("video-inputs", "u/same.mp4") is None
    with pytest.raises(StorageError) as signing:
        await anon_with_catalog.sign("video-inputs", "u/same.mp4", 60)
    assert signing.value.status == 404
