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
and a captured delivery could be replayed to another job's URL. So two more checks:

* the URL carries a token of the submission's own (`new_token`), random, issued by
  the worker holding the job right before it submits; the database keeps only its
  SHA-256 (`token_hash`) with an expiry (migration 0034), and the route refuses a
  token that is not an unexpired one of that job before it reads the body;
* the signed `X-Fal-Webhook-User-Id` must be our fal account's
  (`expected_user_id`); with none configured every delivery is refused (the jobs are
  polled) and the id seen is logged once, so an operator can learn it.

Keys are cached for at most
KEYS_MAX_AGE_SECONDS; a signature no cached key verifies triggers one refresh,
at most once per `refresh_interval` seconds (a flood of forged deliveries costs
fal's key server one request a minute, not one each). A body nested deeper than
MAX_JSON_DEPTH is refused (400) before it is parsed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
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
# fal's results nest a few levels; a deeper body is refused before json.loads could recurse
MAX_JSON_DEPTH = 64
TOKEN_BYTES = 32
# a URL token as new_token() makes them (43 base64url characters); anything else is refused unread
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


class WebhookRefused(Exception):
    """A delivery that is not accepted: `status` is the HTTP answer (401 or 400), `code` a
    short name of the reason (a metric label, the log's rate-limit key)."""

    def __init__(self, status: int, reason: str, code: str | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code or f"refused_{status}"


class ForeignAccount(WebhookRefused):
    """A genuine fal signature for a fal account that is not ours (`user_id`: the one signed)."""

    def __init__(self, user_id: str, expected: str | None):
        if expected is None:
            reason = "no fal account is configured (VIDANIM_FAL_WEBHOOK_USER_ID): deliveries are refused"
        else:
            reason = "the delivery is signed for another fal account"
        super().__init__(401, reason, "foreign_account" if expected is not None else "account_unset")
        self.user_id = user_id


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: fal's request id, OK or ERROR, and the whole body."""

    request_id: str
    status: str
    body: dict[str, Any]


def new_token() -> str:
    """A submission's webhook URL token: 32 random bytes, base64url."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What the database keeps of a token (SHA-256): a leaked table names no URL."""
    return hashlib.sha256(token.encode()).digest()


def token_well_formed(token: str | None) -> bool:
    return token is not None and TOKEN_PATTERN.match(token) is not None


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

    def __init__(
        self,
        keys: JwksKeys,
        *,
        expected_user_id: str | None = None,
        tolerance: float = TOLERANCE_SECONDS,
        clock: Any = time.time,
    ):
        self.keys = keys
        #: our fal account's user id; None: every delivery is refused (ForeignAccount)
        self.expected_user_id = expected_user_id
        self.tolerance = tolerance
        self.clock = clock

    async def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        request_id = headers.get(HEADER_REQUEST_ID, "")
        user_id = headers.get(HEADER_USER_ID, "")
        timestamp = headers.get(HEADER_TIMESTAMP, "")
        signature_hex = headers.get(HEADER_SIGNATURE, "")
        if not (request_id and user_id and timestamp and signature_hex):
            raise WebhookRefused(401, "unsigned: an X-Fal-Webhook-* header is missing", "unsigned")
        try:
            sent = int(timestamp)
        except ValueError:
            raise WebhookRefused(401, "the timestamp is not a number of seconds", "bad_timestamp") from None
        if abs(self.clock() - sent) > self.tolerance:
            raise WebhookRefused(401, f"stale: the timestamp is more than {self.tolerance:g} s from now", "stale")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise WebhookRefused(401, "the signature is not hex", "bad_signature") from None
        if len(signature) != SIGNATURE_BYTES:
            raise WebhookRefused(401, "the signature is not 64 bytes", "bad_signature")
        message = signed_message(request_id, user_id, timestamp, body)
        # no cached key verifies: fal may have rotated its keys, so look once more (rate-limited)
        if not _verified(await self.keys.current(), signature, message) and (
            not await self.keys.refresh() or not _verified(self.keys.keys, signature, message)
        ):
            raise WebhookRefused(401, "the signature does not verify with any of fal's keys", "bad_signature")
        # only now is the user id fal's word: a forged header names nobody worth logging
        if self.expected_user_id is None or not secrets.compare_digest(
            user_id.encode(), self.expected_user_id.encode()
        ):
            raise ForeignAccount(user_id, self.expected_user_id)
        return parse_delivery(request_id, body)


def parse_delivery(request_id: str, body: bytes) -> Delivery:
    """fal's shape: {"request_id", "status": "OK"|"ERROR", "payload", ...}; 400 otherwise."""
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise WebhookRefused(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels", "too_deep")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRefused(400, "the body is not JSON", "not_json") from None
    if not isinstance(data, dict):
        raise WebhookRefused(400, "the body is not a JSON object", "shape")
    status = data.get("status")
    if status not in ("OK", "ERROR"):
        raise WebhookRefused(400, 'the body\'s "status" is not OK or ERROR', "shape")
    if data.get("request_id") != request_id:
        raise WebhookRefused(400, 'the body\'s "request_id" is not the signed one', "shape")
    payload = data.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise WebhookRefused(400, 'the body\'s "payload" is not an object', "shape")
    return Delivery(request_id=request_id, status=status, body=data)


# a JSON string (escapes included): brackets inside one do not nest
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether `body`'s arrays and objects nest deeper than `limit` (strings skipped; no parse)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False
