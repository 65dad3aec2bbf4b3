"""LocalStorage: files on disk, rows in storage.objects, signed URLs over loopback HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from vidanim.simulator.media import mp4_chunks
from vidanim.storage import ObjectExists, StorageError
from vidanim.storage.local import LocalStorage
from vidanim.worker.db import open_pool


@pytest.fixture
async def local(db, tmp_path):
    pool = open_pool(db.dsn, size=2)
    await pool.open()
    storage = LocalStorage(root=tmp_path / "store", pool=pool, signing_secret="s")
    storage.serve()
    yield storage
    await storage.aclose()
    await pool.close()


async def _stream(size):
    for chunk in mp4_chunks(size, chunk=4096):
        yield chunk


async def test_an_upload_lands_on_disk_and_in_storage_objects(local, db, tmp_path):
    info = await local.upload("video-outputs", "u1/j1.mp4", _stream(10_000), content_type="video/mp4")
    assert info.size == 10_000
    assert (tmp_path / "store/video-outputs/u1/j1.mp4").stat().st_size == 10_000
    with db.connect() as conn:
        row = conn.execute(
            "select metadata->>'size', metadata->>'mimetype' from storage.objects"
            " where bucket_id = 'video-outputs' and name = 'u1/j1.mp4'"
        ).fetchone()
    assert row == ("10000", "video/mp4")
    assert (await local.info("video-outputs", "u1/j1.mp4")).size == 10_000
    assert await local.info("video-outputs", "u1/none.mp4") is None


async def test_uploads_never_overwrite(local):
    await local.upload("video-outputs", "u/j.mp4", _stream(100), content_type="video/mp4")
    with pytest.raises(ObjectExists):
        await local.upload("video-outputs", "u/j.mp4", _stream(200), content_type="video/mp4")
    assert (await local.info("video-outputs", "u/j.mp4")).size == 100


async def test_bucket_type_and_size_limits_apply_with_the_real_servers_codes(local, db, tmp_path):
    with pytest.raises(StorageError) as info:
        await local.upload("video-outputs", "u/j.mp4", _stream(100), content_type="text/html")
    assert (info.value.status, info.value.code) == (415, "InvalidMimeType")
    assert str(info.value) == "mime type text/html is not supported"
    with db.connect() as conn:
        conn.execute("update storage.buckets set file_size_limit = 1000 where id = 'video-outputs'")
    with pytest.raises(StorageError) as info:
        await local.upload("video-outputs", "u/big.mp4", _stream(5000), content_type="video/mp4")
    assert (info.value.status, info.value.code) == (413, "EntityTooLarge")
    assert "The object exceeded the maximum allowed size" in str(info.value)
    with pytest.raises(StorageError) as info:
        await local.upload("video-outputs", "u/big.mp4", _stream(5000), content_type="video/mp4", size=5000)
    assert info.value.code == "EntityTooLarge", "an announced size over the limit is refused before reading"
    assert await local.info("video-outputs", "u/big.mp4") is None
    assert list((tmp_path / "store/video-outputs/u").iterdir()) == [], "no partial file is left behind"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "u/../../x.mp4", "u//x.mp4", "u\\x.mp4", "u/\n.mp4"]
)
async def test_path_tricks_cannot_escape_the_bucket(local, name):
    with pytest.raises(StorageError, match="invalid object name"):
        await local.upload("video-outputs", name, _stream(100), content_type="video/mp4")
    with pytest.raises(StorageError, match="invalid object name"):
        await local.sign("video-outputs", name, 60)


async def test_signed_urls_serve_the_object_until_they_expire(local):
    await local.upload("video-outputs", "u/j.mp4", _stream(5000), content_type="video/mp4")
    good = await local.sign("video-outputs", "u/j.mp4", 60)
    short = await local.sign("video-outputs", "u/j.mp4", 1)
    async with httpx.AsyncClient() as client:
        ok = await client.get(good.url)
        assert ok.status_code == 200
        assert ok.headers["content-type"] == "video/mp4"
        assert len(ok.content) == 5000
        await local.upload("video-outputs", "u/other.mp4", _stream(100), content_type="video/mp4")
        other = await local.sign("video-outputs", "u/other.mp4", 60)
        swapped = good.url.split("?")[0] + "?" + other.url.split("?")[1]
        assert (await client.get(swapped)).json()["error"] == "InvalidSignature"
        tampered = good.url[:-3] + "abc"
        assert (await client.get(tampered)).json()["error"] == "InvalidJWT"
        time.sleep(2.1)
        expired = await client.get(short.url)
    assert expired.status_code == 400
    assert expired.json()["error"] == "InvalidJWT"


async def test_delete_removes_the_row_and_the_file(local, tmp_path):
    await local.upload("video-outputs", "u/j.mp4", _stream(100), content_type="video/mp4")
    await local.delete("video-outputs", ["u/j.mp4"])
    assert await local.info("video-outputs", "u/j.mp4") is None
    assert not (tmp_path / "store/video-outputs/u/j.mp4").exists()


async def test_no_signed_url_for_a_missing_object(local):
    with pytest.raises(StorageError) as info:
        await local.sign("video-outputs", "u/none.mp4", 60)
    assert info.value.status == 404
