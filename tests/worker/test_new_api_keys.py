"""Supabase's new API keys end to end: the worker with a secret key, the client with a
publishable key, both through a gateway stand-in that takes keys as Supabase's does."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.client.test_client import SECRET, token_for
from tests.support.fake_supabase_api import FakeSupabaseApi
from tests.support.fake_supabase_gateway import FakeSupabaseGateway
from tests.support.images import PNG
from tests.support.seed import create_user, put_input_image
from tests.worker.conftest import running
from vidanim.client import SupabaseTransport, VidanimClient
from vidanim.storage.supabase import SupabaseStorage
from vidanim.supabase_keys import WrongKey
from vidanim.worker.assemble import ConfigurationError


@pytest.fixture
def gateway(db):
    with FakeSupabaseApi(db.dsn, SECRET) as api, FakeSupabaseGateway(api.url, SECRET) as gw:
        yield gw


async def test_a_worker_with_a_secret_key_completes_a_job_a_client_requested_with_a_publishable_key(
    gateway, db, settings_for, sim, tmp_path
):
    with db.connect() as conn:
        user = create_user(conn)
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    client = VidanimClient(SupabaseTransport(gateway.url, gateway.publishable_key, token_for(user)))
    try:
        path = client.upload_image(image)
        job = client.request_animation(path, prompt="a cat waves")
        settings = settings_for(
            storage_backend="supabase", supabase_url=gateway.url, supabase_service_role_key=gateway.secret_key
        )
        async with running(settings) as app:
            await asyncio.wait_for(app.worker.run(until_idle=True, install_signals=False), 30)
        view = client.wait(job.id, timeout=10)
    finally:
        client.close()
    assert view.status == "completed"
    assert view.video_url is not None
    video = httpx.get(view.video_url)
    assert video.status_code == 200
    assert len(video.content) == sim.output_size
    assert len(sim.submissions) == 1
    kinds = {
        (method, p.split("/")[3] if p.startswith("/storage/") else p.split("/")[1], key, bearer)
        for method, p, key, bearer in gateway.requests
        if not p.startswith("/storage/v1/object/sign/") or method == "POST"
    }
    assert ("POST", "object", "secret", "none") in kinds, "the worker's signing went with its secret key, no bearer"
    assert ("POST", "rest", "publishable", "jwt") in kinds, "the client's calls carried its key and the user's token"
    assert not any(bearer == "secret" for *_, bearer in gateway.requests), "a secret key is never a bearer token"


async def test_the_gateway_refuses_a_secret_key_as_a_bearer_token_and_from_a_browser(gateway):
    raw = httpx.post(
        f"{gateway.url}/storage/v1/object/sign/video-inputs/u/a.png",
        json={"expiresIn": 60},
        headers={"apikey": gateway.secret_key, "Authorization": f"Bearer {gateway.secret_key}"},
    )
    assert raw.status_code == 401
    browser = httpx.post(
        f"{gateway.url}/storage/v1/object/sign/video-inputs/u/a.png",
        json={"expiresIn": 60},
        headers={"apikey": gateway.secret_key, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
    )
    assert browser.status_code == 401
    assert browser.json()["message"] == "Forbidden use of secret API key in browser"


async def test_the_gateway_takes_a_publishable_key_alone_as_anon_and_refuses_an_unknown_sb_key(gateway, db):
    with db.connect() as conn:
        path = put_input_image(conn, create_user(conn))
    url = f"{gateway.url}/storage/v1/object/info/authenticated/video-inputs/{path}"
    as_service = httpx.get(url, headers={"apikey": gateway.secret_key})
    as_anon = httpx.get(url, headers={"apikey": gateway.publishable_key})
    unknown = httpx.get(url, headers={"apikey": "sb_secret_" + "x" * 32})
    assert as_service.status_code == 200, as_service.text
    assert (as_anon.status_code, as_anon.json()["statusCode"]) == (400, "404"), "anon may not see a user's input"
    assert (unknown.status_code, unknown.json()["message"]) == (401, "Invalid API key")
    assert [r[2] for r in gateway.requests] == ["secret", "publishable", "secret"]


async def test_supabase_storage_sends_a_secret_key_only_as_the_apikey(gateway, db):
    storage = SupabaseStorage(supabase_url=gateway.url, service_role_key=gateway.secret_key)
    try:
        assert await storage.info("video-inputs", "nobody/none.png") is None
    finally:
        await storage.aclose()
    assert gateway.requests[-1][2:] == ("secret", "none")


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("publishable", "holds a publishable key (sb_publishable_…), which acts as anon"),
        ("anon", "holds the legacy anon key"),
        ("junk", "holds no Supabase API key"),
    ],
)
async def test_a_worker_given_a_key_that_is_not_the_service_roles_refuses_to_start_in_one_line(
    gateway, settings_for, key, says
):
    value = {
        "publishable": gateway.publishable_key,
        "anon": gateway.role_token("anon"),
        "junk": "not-a-key",
    }[key]
    settings = settings_for(storage_backend="supabase", supabase_url=gateway.url, supabase_service_role_key=value)
    with pytest.raises(ConfigurationError) as refused:
        async with running(settings):
            pass
    message = str(refused.value)
    assert message.startswith("VIDANIM_SUPABASE_SERVICE_ROLE_KEY " + says)
    assert "\n" not in message


@pytest.mark.parametrize("kind", ["secret", "service_role"])
def test_a_client_given_a_secret_key_is_refused_before_any_request(gateway, db, kind):
    with db.connect() as conn:
        user = create_user(conn)
    key = gateway.secret_key if kind == "secret" else gateway.role_token("service_role")
    before = len(gateway.requests)
    with pytest.raises(WrongKey, match="bypasses row-level security and must stay on servers"):
        SupabaseTransport(gateway.url, key, token_for(user))
    assert len(gateway.requests) == before
