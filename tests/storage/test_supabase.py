"""SupabaseStorage against a loopback server speaking Storage's documented HTTP shapes."""

from __future__ import annotations

import pytest

from tests.support.fake_supabase_storage import FakeSupabaseStorage
from vidanim.simulator.media import mp4_chunks
from vidanim.storage import ObjectExists, StorageError
from vidanim.storage.supabase import SupabaseStorage


@pytest.fixture
def fake():
    with FakeSupabaseStorage() as f:
        yield f


@pytest.fixture
async def storage(fake):
    s = SupabaseStorage(supabase_url=fake.url, service_role_key=fake.service_key)
    yield s
    await s.aclose()


async def _stream(size):
    for chunk in mp4_chunks(size, chunk=64 * 1024):
        yield chunk


async def test_uploads_stream_with_a_content_type_and_never_overwrite(storage, fake):
    info = await storage.upload("video-outputs", "u/j.mp4", _stream(300_000), content_type="video/mp4")
    assert info.size == 300_000
    stored = fake.objects[("video-outputs", "u/j.mp4")]
    assert (stored.size, stored.content_type, stored.head[4:8]) == (300_000, "video/mp4", b"ftyp")
    assert fake.chunked_uploads == 1, "the body was streamed, not buffered to a length"
    with pytest.raises(ObjectExists):
        await storage.upload("video-outputs", "u/j.mp4", _stream(10_000), content_type="video/mp4")
    assert fake.objects[("video-outputs", "u/j.mp4")].size == 300_000


async def test_info_reads_the_real_status_from_the_body(storage):
    assert await storage.info("video-outputs", "u/missing.mp4") is None
    await storage.upload("video-outputs", "u/j.mp4", _stream(1000), content_type="video/mp4")
    info = await storage.info("video-outputs", "u/j.mp4")
    assert info is not None
    assert info.size == 1000


async def test_signed_urls_are_absolute_and_carry_the_expiry(storage, fake):
    await storage.upload("video-outputs", "u/j.mp4", _stream(1000), content_type="video/mp4")
    signed = await storage.sign("video-outputs", "u/j.mp4", 600)
    assert signed.url == f"{fake.url}/storage/v1/object/sign/video-outputs/u/j.mp4?token=signed.600"
    with pytest.raises(StorageError) as info:
        await storage.sign("video-outputs", "u/missing.mp4", 600)
    assert info.value.status == 404


async def test_a_wrong_type_is_refused_with_its_real_code(storage):
    with pytest.raises(StorageError) as info:
        await storage.upload("video-outputs", "u/j.mp4", _stream(100), content_type="text/plain")
    assert info.value.status == 415


async def test_a_wrong_key_is_access_denied(fake):
    bad = SupabaseStorage(supabase_url=fake.url, service_role_key="wrong")
    with pytest.raises(StorageError) as info:
        await bad.info("video-outputs", "u/j.mp4")
    await bad.aclose()
    assert info.value.status == 403


async def test_an_unreachable_server_is_a_storage_error():
    s = SupabaseStorage(supabase_url="http://127.0.0.1:1", service_role_key="k")
    with pytest.raises(StorageError, match="could not be reached"):
        await s.info("video-outputs", "u/j.mp4")
    await s.aclose()


async def test_delete_removes_objects(storage, fake):
    await storage.upload("video-outputs", "u/j.mp4", _stream(100), content_type="video/mp4")
    await storage.delete("video-outputs", ["u/j.mp4", "u/never.mp4"])
    assert fake.objects == {}


@pytest.mark.parametrize("name", ["../x.mp4", "/abs.mp4", "a//b.mp4", "a/./b.mp4", "a\\b.mp4", "a/\x00.mp4", ""])
async def test_path_tricks_never_reach_the_server(storage, fake, name):
    with pytest.raises(StorageError, match="invalid object name"):
        await storage.upload("video-outputs", name, _stream(100), content_type="video/mp4")
    with pytest.raises(StorageError, match="invalid object name"):
        await storage.sign("video-outputs", name, 60)
    assert fake.uploads == 0
