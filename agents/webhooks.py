"""Inbound webhooks: other systems start an agent with a signed ``POST /hooks/<agent uuid>/``.

Requests are signed the Standard Webhooks way (https://www.standardwebhooks.com/):

* ``webhook-id``: a unique id of the message; a second request with the same id is a replay
  and returns the execution the first one started (idempotency key ``webhook:<id>``);
* ``webhook-timestamp``: integer seconds since the epoch; more than five minutes away from
  the server's clock is refused, so a captured request cannot be replayed later;
* ``webhook-signature``: one or more space-separated ``v1,<base64 HMAC-SHA256>`` over
  ``"{id}.{timestamp}.{body}"``, keyed with the secret: ``whsec_`` + base64 of the key bytes.

Each agent has a current secret and, while a rotation is under way, a next one; both are valid
until the rotation finishes (``Agent.webhook_secrets``: {"current": ..., "next": ...}).

Answers use the API's error format: 202 started, 200 replay, 400 malformed (headers or JSON),
401 bad or missing signature or stale timestamp, 404 unknown agent or webhook off, 409 agent
paused, 413 too large, 422 input refused by the agent, 429 rate limited (Retry-After).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from api.errors import Malformed, error_response
from api.jsonbody import parse_json_bytes
from api.throttling import hit
from executions.services import ExecutionRefused, execution_create

from .kinds import get_kind
from .kinds.base import InvalidInputError
from .models import Agent
from .secrets import Secrets

logger = logging.getLogger("conveyor.webhooks")

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES = 32
# Seconds a request's timestamp may be away from the server's clock, either way.
TOLERANCE = 5 * 60
_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_TIMESTAMP = re.compile(r"^\d{1,15}$")


# --- Secrets and signatures -------------------------------------------------------------------


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
        if code:
            self.code = code


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


# --- Services ---------------------------------------------------------------------------------


class WebhookStateError(Exception):
    """The webhook is not in a state that allows this (HTTP 409)."""

    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


def _locked(agent: Agent) -> Agent:
    return Agent.objects.select_for_update().get(pk=agent.pk)


def _save(agent: Agent, fresh: Agent, *, enabled: bool, values: Mapping[str, str]) -> None:
    fresh.webhook_enabled = enabled
    fresh.webhook_secrets = Secrets(values)
    fresh.save(update_fields=["webhook_enabled", "webhook_secrets", "updated_at"])
    agent.webhook_enabled = fresh.webhook_enabled
    agent.webhook_secrets = fresh.webhook_secrets


def webhook_enable(*, agent: Agent) -> str | None:
    """Turn the webhook on. Creates the first secret and returns it (the only time it is
    returned by a service that creates it); returns None if a secret already existed."""
    with transaction.atomic():
        fresh = _locked(agent)
        values = fresh.webhook_secrets.reveal()
        created = None
        if not values.get("current"):
            created = values["current"] = generate_secret()
        _save(agent, fresh, enabled=True, values=values)
    logger.info("webhook enabled", extra={"action": "webhook_enabled", "agent_id": str(agent.uuid)})
    return created


def webhook_disable(*, agent: Agent) -> bool:
    """Turn the webhook off: calls get 404. Secrets are kept for when it is turned on again.
    Returns False if it was already off."""
    with transaction.atomic():
        fresh = _locked(agent)
        was_enabled = fresh.webhook_enabled
        _save(agent, fresh, enabled=False, values=fresh.webhook_secrets.reveal())
    logger.info(
        "webhook disabled", extra={"action": "webhook_disabled", "agent_id": str(agent.uuid)}
    )
    return was_enabled


def webhook_rotate_start(*, agent: Agent) -> str:
    """Create the next secret and return it. Until the rotation finishes, both the current and
    the next secret are accepted, so senders can switch at their own pace. Starting again
    before finishing replaces the unfinished next secret (e.g. when it was lost)."""
    with transaction.atomic():
        fresh = _locked(agent)
        values = fresh.webhook_secrets.reveal()
        secret = generate_secret()
        values["next" if values.get("current") else "current"] = secret
        _save(agent, fresh, enabled=fresh.webhook_enabled, values=values)
    logger.info(
        "webhook secret rotation started",
        extra={"action": "webhook_rotation_started", "agent_id": str(agent.uuid)},
    )
    return secret


def webhook_rotate_finish(*, agent: Agent) -> None:
    """The next secret becomes the current one; the old one is refused from now on."""
    with transaction.atomic():
        fresh = _locked(agent)
        values = fresh.webhook_secrets.reveal()
        if not values.get("next"):
            raise WebhookStateError(
                "No rotation is under way: start one first.", code="no_rotation"
            )
        _save(agent, fresh, enabled=fresh.webhook_enabled, values={"current": values["next"]})
    logger.info(
        "webhook secret rotation finished",
        extra={"action": "webhook_rotation_finished", "agent_id": str(agent.uuid)},
    )


def webhook_secrets_of(agent: Agent) -> Secrets:
    """The agent's webhook secrets (an agent not yet read back from the database holds "")."""
    value = agent.webhook_secrets
    return value if isinstance(value, Secrets) else Secrets()


def webhook_rotation_in_progress(agent: Agent) -> bool:
    return bool(webhook_secrets_of(agent).get("next"))


# --- The view -------------------------------------------------------------------------------


@csrf_exempt
def webhook_receive(request, agent_id: str):
    """``POST /hooks/<agent uuid>/``: verify, then start a run with the JSON body as input."""
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "Send a POST.", headers={"Allow": "POST"})
    now = time.time()
    try:
        agent_uuid = uuid.UUID(agent_id)
    except ValueError:
        agent_uuid = None
    agent = (
        Agent.objects.filter(uuid=agent_uuid, webhook_enabled=True).first() if agent_uuid else None
    )
    if agent is None:
        return error_response(
            404, "not_found", "No webhook here: the agent does not exist or its webhook is off."
        )

    limit = settings.CONVEYOR_API_MAX_BODY_BYTES
    too_large = error_response(413, "too_large", f"The request body is larger than {limit} bytes.")
    try:
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            return too_large
    except ValueError:
        return error_response(400, "malformed", "Content-Length is not a number.")
    try:
        body = request.body
    except RequestDataTooBig:
        return too_large
    if len(body) > limit:
        return too_large

    try:
        message = verify(
            secrets=webhook_secrets_of(agent), headers=request.headers, body=body, now=now
        )
    except WebhookRejected as exc:
        logger.info(
            "webhook refused: %s",
            exc.code,
            extra={"action": "webhook_refused", "agent_id": str(agent.uuid), "code": exc.code},
        )
        return error_response(exc.status, exc.code, exc.message)

    wait = hit(
        "webhook", agent.uuid.hex, settings.CONVEYOR_WEBHOOK_RATE, setting="CONVEYOR_WEBHOOK_RATE"
    )
    if wait is not None:
        return error_response(
            429,
            "rate_limited",
            "Too many webhook calls for this agent; try again later.",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )

    try:
        payload = parse_json_bytes(body) if body.strip() else None
    except Malformed as exc:
        return error_response(400, exc.error_code, exc.message)

    kind = get_kind(agent.kind)
    try:
        if kind is not None:
            kind.validate_input(agent.config, payload)
        execution = execution_create(
            agent=agent,
            trigger="webhook",
            input=payload,
            idempotency_key=f"webhook:{message.msg_id}",
            reason=f"Webhook {message.msg_id}",
        )
    except InvalidInputError as exc:
        return error_response(422, "invalid_input", exc.message, {"input": [exc.message]})
    except ExecutionRefused as exc:
        return error_response(409, exc.code, exc.message)

    logger.info(
        "webhook accepted",
        extra={
            "action": "webhook_replayed" if execution.is_replay else "webhook_accepted",
            "agent_id": str(agent.uuid),
            "execution_id": str(execution.uuid),
            "secret": message.matched,
        },
    )
    return _accepted(execution)


def _accepted(execution) -> JsonResponse:
    return JsonResponse(
        {"id": str(execution.uuid), "status": execution.status, "replay": execution.is_replay},
        status=200 if execution.is_replay else 202,
    )
