"""fal's delivery check: every refusal, the key set's cache, rotation and its rate limit.

The key set is served over real HTTP by the simulator (GET /.well-known/jwks.json),
signed deliveries are made with the simulator's own key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vidanim.simulator import Simulator
from vidanim.webhooks.fal import (
    HEADER_REQUEST_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_USER_ID,
    MAX_JSON_DEPTH,
    FalWebhookVerifier,
    ForeignAccount,
    JwksKeys,
    WebhookRefused,
    json_depth_exceeds,
    jwk_of,
    keys_from_jwks,
    sign,
)

REQUEST_ID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
USER = "fal-user-1"


def body_of(**overrides: Any) -> bytes:
    data = {
        "request_id": REQUEST_ID,
        "gateway_request_id": REQUEST_ID,
        "status": "OK",
        "payload": {"video": {"url": "https://v3.fal.media/files/out.mp4"}},
    }
    data.update(overrides)
    return json.dumps(data).encode()


def signed(key: Ed25519PrivateKey, body: bytes, *, at: float | None = None, request_id: str = REQUEST_ID):
    timestamp = str(int(time.time() if at is None else at))
    return {
        HEADER_REQUEST_ID: request_id,
        HEADER_USER_ID: USER,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(key, request_id, USER, timestamp, body),
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim():
    with Simulator() as s:
        yield s


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def verifier(sim, http, clock):
    return FalWebhookVerifier(JwksKeys([sim.jwks_url], http, clock=clock), expected_user_id=USER)


async def test_a_delivery_signed_with_a_key_of_the_set_is_accepted(sim, verifier):
    body = body_of()
    delivery = await verifier.verify(signed(sim.webhooks.key, body), body)
    assert delivery.request_id == REQUEST_ID
    assert delivery.status == "OK"
    assert delivery.body["payload"]["video"]["url"].endswith("out.mp4")


@pytest.mark.parametrize("missing", [HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE])
async def test_a_delivery_without_one_of_the_four_headers_is_refused_401(sim, verifier, missing):
    body = body_of()
    headers = signed(sim.webhooks.key, body)
    del headers[missing]
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, body)
    assert refused.value.status == 401
    assert "missing" in refused.value.reason


NOW = 1_800_000_000  # a fixed clock for the window: the edge is exact, not a race with the wall clock


@pytest.mark.parametrize("offset", [-301, 301, -3600, 86400])
async def test_a_timestamp_more_than_300_s_away_is_stale(sim, http, offset):
    verifier = FalWebhookVerifier(JwksKeys([sim.jwks_url], http), clock=lambda: float(NOW), expected_user_id=USER)
    body = body_of()
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(signed(sim.webhooks.key, body, at=NOW + offset), body)
    assert refused.value.status == 401
    assert "stale" in refused.value.reason


@pytest.mark.parametrize("timestamp", ["soon", "1.8e9", "1800000000.5", " "])
async def test_a_timestamp_that_is_not_whole_seconds_is_refused_even_when_signed(sim, verifier, timestamp):
    body = body_of()
    headers = {
        HEADER_REQUEST_ID: REQUEST_ID,
        HEADER_USER_ID: USER,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: sign(sim.webhooks.key, REQUEST_ID, USER, timestamp, body),
    }
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, body)
    assert (refused.value.status, refused.value.reason) == (401, "the timestamp is not a number of seconds")


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
async def test_a_timestamp_within_300_s_is_accepted(sim, http, offset):
    verifier = FalWebhookVerifier(JwksKeys([sim.jwks_url], http), clock=lambda: float(NOW), expected_user_id=USER)
    body = body_of()
    assert (await verifier.verify(signed(sim.webhooks.key, body, at=NOW + offset), body)).status == "OK"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [("zz" * 64, "not hex"), ("ab" * 63, "not 64 bytes"), ("ab" * 64, "does not verify")],
)
async def test_a_malformed_or_wrong_signature_is_refused_401(sim, verifier, signature, reason):
    body = body_of()
    headers = signed(sim.webhooks.key, body) | {HEADER_SIGNATURE: signature}
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, body)
    assert (refused.value.status, reason in refused.value.reason) == (401, True)


async def test_a_body_changed_after_signing_is_refused(sim, verifier):
    body = body_of()
    headers = signed(sim.webhooks.key, body)
    forged = body_of(payload={"video": {"url": "https://attacker.example/x.mp4"}})
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, forged)
    assert refused.value.status == 401


@pytest.mark.parametrize("header", [HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP])
async def test_a_signed_header_changed_after_signing_is_refused(sim, verifier, header):
    body = body_of()
    headers = signed(sim.webhooks.key, body)
    headers[header] = str(int(headers[header]) + 1) if header == HEADER_TIMESTAMP else headers[header] + "x"
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, body)
    assert refused.value.status == 401


async def test_a_key_outside_the_set_is_refused(sim, verifier):
    body = body_of()
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(signed(Ed25519PrivateKey.generate(), body), body)
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (body_of(status="DONE"), "OK or ERROR"),
        (body_of(status=None), "OK or ERROR"),
        (body_of(request_id="another-request"), "not the signed one"),
        (body_of(payload="a string"), '"payload" is not an object'),
    ],
)
async def test_a_signed_body_that_is_not_fals_shape_is_refused_400(sim, verifier, body, reason):
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(signed(sim.webhooks.key, body), body)
    assert refused.value.status == 400
    assert reason in refused.value.reason


async def test_an_error_delivery_and_a_payload_error_delivery_are_fals_shape(sim, verifier):
    error = body_of(status="ERROR", error="Invalid status code: 422", payload={"detail": []})
    assert (await verifier.verify(signed(sim.webhooks.key, error), error)).status == "ERROR"
    unserializable = body_of(payload=None, payload_error="Response payload is not JSON serializable")
    assert (await verifier.verify(signed(sim.webhooks.key, unserializable), unserializable)).status == "OK"


async def test_keys_are_fetched_once_and_reused(sim, verifier):
    for _ in range(5):
        body = body_of()
        await verifier.verify(signed(sim.webhooks.key, body), body)
    assert verifier.keys.fetches == 1


async def test_keys_are_fetched_again_after_24_hours(sim, verifier, clock):
    body = body_of()
    await verifier.verify(signed(sim.webhooks.key, body), body)
    clock.now += 24 * 3600 - 1
    await verifier.verify(signed(sim.webhooks.key, body), body)
    assert verifier.keys.fetches == 1
    clock.now += 1
    await verifier.verify(signed(sim.webhooks.key, body), body)
    assert verifier.keys.fetches == 2


async def test_a_rotated_key_is_learned_by_one_refresh(sim, verifier, clock):
    body = body_of()
    await verifier.verify(signed(sim.webhooks.key, body), body)
    sim.webhooks.key = Ed25519PrivateKey.generate()  # fal rotates its key
    clock.now += verifier.keys.refresh_interval
    assert (await verifier.verify(signed(sim.webhooks.key, body), body)).status == "OK"
    assert verifier.keys.fetches == 2


async def test_concurrent_deliveries_signed_with_a_rotated_key_all_verify_after_one_refresh(sim, verifier, clock):
    body = body_of()
    await verifier.verify(signed(sim.webhooks.key, body), body)
    sim.webhooks.key = Ed25519PrivateKey.generate()  # fal rotates its key
    clock.now += verifier.keys.refresh_interval
    deliveries = (verifier.verify(signed(sim.webhooks.key, body), body) for _ in range(10))
    results = await asyncio.gather(*deliveries, return_exceptions=True)
    assert [getattr(r, "status", r) for r in results] == ["OK"] * 10, "those that waited use the refreshed keys"
    assert verifier.keys.fetches == 2, "one refresh for all ten"


async def test_unknown_signatures_refresh_the_keys_at_most_once_a_minute(sim, verifier, clock):
    body = body_of()
    await verifier.verify(signed(sim.webhooks.key, body), body)
    forger = Ed25519PrivateKey.generate()
    clock.now += 61
    for _ in range(20):  # a flood of forged deliveries
        with pytest.raises(WebhookRefused):
            await verifier.verify(signed(forger, body), body)
    assert verifier.keys.fetches == 2, "one refresh for the whole flood"
    clock.now += 60
    with pytest.raises(WebhookRefused):
        await verifier.verify(signed(forger, body), body)
    assert verifier.keys.fetches == 3


async def test_every_configured_url_is_read_and_one_failing_is_tolerated(sim, http, clock):
    keys = JwksKeys([f"{sim.base_url}/no-such/jwks.json", sim.jwks_url, "http://127.0.0.1:9/jwks.json"], http)
    verifier = FalWebhookVerifier(keys, clock=time.time, expected_user_id=USER)
    body = body_of()
    assert (await verifier.verify(signed(sim.webhooks.key, body), body)).status == "OK"
    assert keys.fetches == 3


async def test_no_key_server_answering_refuses_every_delivery(sim, http):
    verifier = FalWebhookVerifier(JwksKeys(["http://127.0.0.1:9/jwks.json"], http), expected_user_id=USER)
    body = body_of()
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(signed(sim.webhooks.key, body), body)
    assert refused.value.status == 401


def test_a_jwks_x_with_padding_and_foreign_entries_yields_the_ed25519_keys():
    key = Ed25519PrivateKey.generate().public_key()
    padded = base64.urlsafe_b64encode(key.public_bytes_raw()).decode()
    assert padded.endswith("=")
    document = {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": padded},
            jwk_of(key),
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": padded},
            {"kty": "OKP", "crv": "Ed25519", "x": "!!"},
            {"kty": "OKP", "crv": "Ed25519"},
            "junk",
        ]
    }
    keys = keys_from_jwks(document)
    assert [k.public_bytes_raw() for k in keys] == [key.public_bytes_raw()] * 2
    assert keys_from_jwks({"keys": "none"}) == []
    assert keys_from_jwks(None) == []


async def test_a_failed_refresh_keeps_the_cached_keys_so_genuine_deliveries_still_verify(sim, verifier, clock):
    body = body_of()
    await verifier.verify(signed(sim.webhooks.key, body), body)
    verifier.keys.urls = ["http://127.0.0.1:9/jwks.json"]  # fal's key server is down from now on
    clock.now += verifier.keys.refresh_interval
    with pytest.raises(WebhookRefused):  # a junk signature: one refresh, which fails
        await verifier.verify(signed(Ed25519PrivateKey.generate(), body), body)
    assert verifier.keys.fetches == 2, "the refresh was tried"
    assert (await verifier.verify(signed(sim.webhooks.key, body), body)).status == "OK", "the keys it had are kept"


async def test_concurrent_first_deliveries_fetch_the_key_set_once(sim, verifier):
    body = body_of()
    results = await asyncio.gather(*(verifier.verify(signed(sim.webhooks.key, body), body) for _ in range(10)))
    assert [r.status for r in results] == ["OK"] * 10
    assert verifier.keys.fetches == 1, "one fetch for every delivery that waited on the cold cache"


# our fal account only ----------------------------------------------------------------------
async def test_a_genuine_signature_for_another_fal_account_is_refused_401(sim, http, clock):
    theirs = FalWebhookVerifier(JwksKeys([sim.jwks_url], http, clock=clock), expected_user_id="our-account")
    body = body_of()
    with pytest.raises(ForeignAccount) as refused:
        await theirs.verify(signed(sim.webhooks.key, body), body)
    assert (refused.value.status, refused.value.code, refused.value.user_id) == (401, "foreign_account", USER)
    assert "another fal account" in refused.value.reason


async def test_with_no_account_configured_every_delivery_is_refused_naming_the_user_id_signed(sim, http, clock):
    unset = FalWebhookVerifier(JwksKeys([sim.jwks_url], http, clock=clock))
    body = body_of()
    with pytest.raises(ForeignAccount) as refused:
        await unset.verify(signed(sim.webhooks.key, body), body)
    assert (refused.value.code, refused.value.user_id) == ("account_unset", USER)
    assert "VIDANIM_FAL_WEBHOOK_USER_ID" in refused.value.reason


async def test_a_forged_user_id_header_is_a_bad_signature_not_an_account_to_learn(sim, verifier):
    body = body_of()
    headers = signed(sim.webhooks.key, body) | {HEADER_USER_ID: "someone-else"}
    with pytest.raises(WebhookRefused) as refused:
        await verifier.verify(headers, body)
    assert not isinstance(refused.value, ForeignAccount)
    assert refused.value.code == "bad_signature"


# nesting -----------------------------------------------------------------------------------
def nested(depth: int) -> bytes:
    """A delivery of fal's shape whose "payload" holds arrays `depth` levels deep in all."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return b'{"request_id": "%s", "status": "OK", "payload": {"x": %s}}' % (REQUEST_ID.encode(), inner.encode())


async def test_a_body_nested_deeper_than_the_bound_is_refused_400(sim, verifier):
    at_bound = nested(MAX_JSON_DEPTH)
    assert (await verifier.verify(signed(sim.webhooks.key, at_bound), at_bound)).status == "OK"
    for depth in (MAX_JSON_DEPTH + 1, 200_000):  # the second made json.loads raise RecursionError
        body = nested(depth)
        with pytest.raises(WebhookRefused) as refused:
            await verifier.verify(signed(sim.webhooks.key, body), body)
        assert (refused.value.status, refused.value.code) == (400, "too_deep")


def test_brackets_inside_strings_do_not_nest():
    deep_text = json.dumps({"text": "[" * 1000 + '\\"{' * 100}).encode()
    assert not json_depth_exceeds(deep_text, 3)
    assert json_depth_exceeds(b'{"a": [[{"b": "]]]"}]]}', 3)
    assert not json_depth_exceeds(b'{"a": [[{"b": "]]]"}]]}', 4)
