"""fal's webhook deliveries: the signature check, the key set, and the body's shape.

fal signs each delivery with ED25519 and publishes its public keys as a JWKS
(`kty=OKP`, `crv=Ed25519`, `x` base64url). The headers `X-Fal-Webhook-Request-Id`,
`-User-Id`, `-Timestamp` (unix seconds) and `-Signature` (hex) come with it; the
signed message is

    request_id "\\n" user_id "\\n" timestamp "\\n" sha256_hex(raw body)

A delivery is accepted when its timestamp is within TOLERANCE_SECONDS of now and
its signature verifies with any key of the set.

fal signs with one key for every account, and the signature does not cover the URL:
any fal user could have fal deliver a signed result to our endpoint for any job id,
and a captured delivery could be replayed to another job's URL. So each URL vidanim
hands to fal carries a token, an HMAC of the job id under a key only vidanim's
workers hold (derived from the fal key they share): a delivery to a URL vidanim did
not issue is refused before its signature is looked at. Keys are cached for at most
KEYS_MAX_AGE_SECONDS; a signature no cached key verifies triggers one refresh,
at most once per `refresh_interval` seconds (a flood of forged deliveries costs
fal's key server one request a minute, not one each).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER_REQUEST_ID = "x-fal-webhook-request-id"
HEADER_USER_ID = "x-fal-webhook-user-id"
HEADER_TIMESTAMP = "x-fal-webhook-timestamp"
HEADER_SIGNATURE = "x-fal-webhook-signature"
TOLERANCE_SECONDS = 300
KEYS_MAX_AGE_SECONDS = 24 * 3600.0
REFRESH_INTERVAL_SECONDS = 60.0
# fal's two published key-set addresses (older docs, newer docs); the setting may name others
DEFAULT_JWKS_URLS = ("https://rest.alpha.fal.ai/.well-known/jwks.json", "https://rest.fal.ai/.well-known/jwks.json")
# A result is a small JSON document (the video is a URL); anything larger is not fal's.
MAX_BODY_BYTES = 1024 * 1024
SIGNATURE_BYTES = 64


class WebhookRefused(Exception):
    """A delivery that is not accepted: `status` is the HTTP answer (401 or 400)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: fal's request id, OK or ERROR, and the whole body."""

    request_id: str
    status: str
    body: dict[str, Any]


def url_token(secret: str, job_id: object) -> str:
    """The token of the webhook URL vidanim issues for `job_id` (an HMAC-SHA256 of it)."""
    key = hashlib.sha256(f"vidanim fal webhook url\n{secret}".encode()).digest()
    return hmac.new(key, str(job_id).encode(), hashlib.sha256).hexdigest()


def token_valid(secret: str, job_id: object, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(url_token(secret, job_id), token)


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs for a delivery."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()


def sign(key: Ed25519PrivateKey, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
    """The hex signature fal sends (the simulator signs its deliveries with this)."""
    return key.sign(signed_message(request_id, user_id, timestamp, body)).hex()


def jwk_of(key: Ed25519PublicKey, kid: str | None = None) -> dict[str, str]:
    """A public key as a JWKS entry."""
    raw = key.public_bytes_raw()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    return jwk | ({"kid": kid} if kid else {})


def keys_from_jwks(document: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document; other entries are skipped ("x" may carry '=' padding)."""
    entries = document.get("keys") if isinstance(document, dict) else None
    keys: list[Ed25519PublicKey] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        x = x.rstrip("=")
        try:
            raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (ValueError, binascii.Error):
            continue
    return keys


class JwksKeys:
    """fal's public keys, fetched from every configured URL, cached, refreshed when needed."""

    def __init__(
        self,
        urls: Sequence[str],
        http: httpx.AsyncClient,
        *,
        max_age: float = KEYS_MAX_AGE_SECONDS,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        clock: Any = time.monotonic,
    ):
        self.urls = list(urls)
        self.http = http
        self.max_age = min(max_age, KEYS_MAX_AGE_SECONDS)
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.keys: list[Ed25519PublicKey] = []
        self.fetched_at: float | None = None
        #: key-set requests made (each URL counts)
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def current(self) -> list[Ed25519PublicKey]:
        """The cached keys, fetched first when there are none or they are older than `max_age`."""
        if self.fetched_at is None or self.clock() - self.fetched_at >= self.max_age:
            await self.refresh(force=True)
        return self.keys

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch again, unless the last fetch is more recent than `refresh_interval` (or one runs)."""
        stamp = self.fetched_at
        async with self._lock:
            if self.fetched_at != stamp:
                return True  # another caller refreshed while this one waited
            if not force and self.fetched_at is not None and self.clock() - self.fetched_at < self.refresh_interval:
                return False
            keys: list[Ed25519PublicKey] = []
            for url in self.urls:
                self.fetches += 1
                try:
                    response = await self.http.get(url)
                    response.raise_for_status()
                    keys += keys_from_jwks(response.json())
                except (httpx.HTTPError, ValueError):
                    continue  # the other URL may answer; with none, verification fails (401, fal retries)
            self.fetched_at = self.clock()
            if keys:
                self.keys = keys
            return True


def _verified(keys: Sequence[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


class FalWebhookVerifier:
    """Checks a delivery exactly as fal documents it; returns it parsed or raises WebhookRefused."""

    def __init__(self, keys: JwksKeys, *, tolerance: float = TOLERANCE_SECONDS, clock: Any = time.time):
        self.keys = keys
        self.tolerance = tolerance
        self.clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        request_id = headers.get(HEADER_REQUEST_ID, "")
        user_id = headers.get(HEADER_USER_ID, "")
        timestamp = headers.get(HEADER_TIMESTAMP, "")
        signature_hex = headers.get(HEADER_SIGNATURE, "")
        if not (request_id and user_id and timestamp and signature_hex):
            raise WebhookRefused(401, "unsigned: an X-Fal-Webhook-* header is missing")
        try:
            sent = int(timestamp)
        except ValueError:
            raise WebhookRefused(401, "the timestamp is not a number of seconds") from None
        if abs(self.clock() - sent) > self.tolerance:
            raise WebhookRefused(401, f"stale: the timestamp is more than {self.tolerance:g} s from now")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRefused(401, "the signature is not hex") from None
        if len(signature) != SIGNATURE_BYTES:
            raise WebhookRefused(401, "the signature is not 64 bytes")
        message = signed_message(request_id, user_id, timestamp, body)
        # no cached key verifies: fal may have rotated its keys, so look once more (rate-limited)
        if not _verified(await self.keys.current(), signature, message) and (
            not await self.keys.refresh() or not _verified(self.keys.keys, signature, message)
        ):
            raise WebhookRefused(401, "the signature does not verify with any of fal's keys")
        return parse_delivery(request_id, body)


def parse_delivery(request_id: str, body: bytes) -> Delivery:
    """fal's shape: {"request_id", "status": "OK"|"ERROR", "payload", ...}; 400 otherwise."""
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookRefused(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookRefused(400, "the body is not a JSON object")
    status = data.get("status")
    if status not in ("OK", "ERROR"):
        raise WebhookRefused(400, 'the body\'s "status" is not OK or ERROR')
    if data.get("request_id") != request_id:
        raise WebhookRefused(400, 'the body\'s "request_id" is not the signed one')
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise WebhookRefused(400, 'the body\'s "payload" is not an object')
    return Delivery(request_id=request_id, status=status, body=data)
