"""Signing and checking inbound webhook requests, the Standard Webhooks way
(https://www.standardwebhooks.com/):

* ``webhook-id``: a unique id of the message; a second request with the same id is a replay
  and returns the execution the first one started (idempotency key ``webhook:<id>``);
* ``webhook-timestamp``: integer seconds since the epoch; more than five minutes away from
  the server's clock is refused, so a captured request cannot be replayed later;
* ``webhook-signature``: one or more space-separated ``v1,<base64 HMAC-SHA256>`` over
  ``"{id}.{timestamp}.{body}"``, keyed with the secret: ``whsec_`` + base64 of the key bytes.

Each agent has a current secret and, while a rotation is under way, a next one; both are valid
until the rotation finishes (``Agent.webhook_secrets``: {"current": ..., "next": ...}).

Pure functions of their arguments: no database, no request. The endpoint that uses them is
``agents.webhook_views.webhook_receive``; the secrets are kept by ``agents.webhook_services``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger("conveyor.webhooks")

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
# Seconds a request's timestamp may be away from the server's clock, either way.
TOLERANCE = 5 * 60
_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"^\d{1,15}$")


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(*, secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a message (for senders, tests and the examples)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookRejected(Exception):
    """A request that does not start a run; carries the HTTP answer."""

    status = 400
    code = "malformed"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.code


class BadHeaders(WebhookRejected):
    status = 400
    code = "bad_headers"


class BadSignature(WebhookRejected):
    status = 401
    code = "signature_invalid"


@dataclass(frozen=True)
class SignedMessage:
    msg_id: str
    timestamp: int
    matched: str  # which secret matched: "current" or "next"


def verify(
    *, secrets: Mapping[str, str], headers: Mapping[str, str], body: bytes, now: float
) -> SignedMessage:
    """Check a request's signature headers against the agent's secrets.

    1. webhook-id and webhook-timestamp must be there and well formed (else BadHeaders, 400).
    2. webhook-signature must be there (else BadSignature "signature_missing").
    3. The timestamp must be within TOLERANCE of ``now`` (else "timestamp_out_of_tolerance").
    4. One ``v1,`` signature must equal the HMAC under one of the secrets, compared in constant
       time (else "signature_invalid"). Other versions and undecodable entries are skipped.
    """
    msg_id = headers.get("webhook-id", "")
    raw_timestamp = headers.get("webhook-timestamp", "")
    signature_header = headers.get("webhook-signature", "")
    if not msg_id or not raw_timestamp:
        missing = [
            n for n, v in (("webhook-id", msg_id), ("webhook-timestamp", raw_timestamp)) if not v
        ]
        raise BadHeaders(f"Missing header: {', '.join(missing)}.", code="missing_headers")
    if not _ID.match(msg_id):
        raise BadHeaders("webhook-id must be 1 to 200 printable characters without spaces.")
    if not _TIMESTAMP.match(raw_timestamp):
        raise BadHeaders("webhook-timestamp must be whole seconds since 1970-01-01 UTC.")
    if not signature_header.strip():
        raise BadSignature("The webhook-signature header is missing.", code="signature_missing")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > TOLERANCE:
        raise BadSignature(
            f"webhook-timestamp is more than {TOLERANCE // 60} minutes away from the server's "
            f"clock ({int(now)}): the request is too old, or the sender's clock is wrong.",
            code="timestamp_out_of_tolerance",
        )
    offered = []
    for entry in signature_header.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not offered:
        raise BadSignature(
            "webhook-signature has no v1 signature (expected “v1,<base64>”).",
            code="signature_invalid",
        )
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for slot in ("current", "next"):
        secret = secrets.get(slot)
        if not secret:
            continue
        try:
            expected = hmac.new(_key(secret), signed, hashlib.sha256).digest()
        except (binascii.Error, ValueError):
            logger.error("unreadable webhook secret", extra={"action": "webhook_secret_bad"})
            continue
        # Every offered signature is compared, so the time taken does not tell which matched.
        if any([hmac.compare_digest(expected, candidate) for candidate in offered]):
            return SignedMessage(msg_id=msg_id, timestamp=timestamp, matched=slot)
    raise BadSignature(
        "No signature in webhook-signature matches this agent's webhook secret.",
        code="signature_invalid",
    )
