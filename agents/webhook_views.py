"""The agent's webhook on the web: the inbound endpoint other systems call, and the agent
page's webhook section (turn it on and off, rotate the secret, see it once).

``POST /hooks/<agent uuid>/`` (``webhook_receive``) checks the signature
(``agents.webhook_signing``) and starts a run through ``execution_request`` with the JSON body
as input. Answers use the one error format (``common.errors``): 202 started, 200 replay, 400
malformed (headers or JSON), 401 bad or missing signature or stale timestamp, 404 unknown agent
or webhook off, 409 agent paused or webhook-id reused with another body, 413 too large, 422
input refused by the agent, 429 rate limited (Retry-After).

A new secret is revealed once: the page view that creates it leaves a "reveal pending" mark in
the session (which secret, never its value); the next render of the agent page shows the secret
(``panel_context``, called by the agent page's view) and removes the mark, so a reload no longer
shows it.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from common.errors import Malformed, error_response
from common.jsonbody import parse_json_bytes
from common.rates import hit
from executions.services import ExecutionRefused, execution_request

from .kinds.base import InvalidInputError
from .models import Agent
from .webhook_services import (
    WebhookStateError,
    webhook_disable,
    webhook_enable,
    webhook_rotate_finish,
    webhook_rotate_start,
    webhook_secrets_of,
)
from .webhook_signing import WebhookRejected, verify

logger = logging.getLogger("conveyor.webhooks")

REVEAL_SESSION_KEY = "conveyor.webhook_reveal"


# --- The endpoint ------------------------------------------------------------------------------


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

    try:
        execution = execution_request(
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


# --- The agent page's section ------------------------------------------------------------------


def _mark_reveal(request, agent: Agent, slot: str) -> None:
    pending = dict(request.session.get(REVEAL_SESSION_KEY, {}))
    pending[str(agent.uuid)] = slot
    request.session[REVEAL_SESSION_KEY] = pending


def _section_action(action):
    """A POST from the section by the agent's owner; back to the section afterwards."""

    @login_required
    @require_POST
    @functools.wraps(action)
    def view(request, uuid):
        agent = get_object_or_404(Agent, uuid=uuid, owner=request.user)
        action(request, agent)
        return redirect(reverse("agents:detail", args=[agent.uuid]) + "#webhook")

    return view


@_section_action
def enable(request, agent: Agent) -> None:
    if webhook_enable(agent=agent) is not None:
        _mark_reveal(request, agent, "current")
        messages.success(request, "Webhook on. Copy the signing secret below: it is shown once.")
    else:
        messages.success(request, "Webhook on: signed calls to its URL start runs again.")


@_section_action
def disable(request, agent: Agent) -> None:
    webhook_disable(agent=agent)
    messages.info(request, "Webhook off: calls to its URL are refused (404).")


@_section_action
def rotate(request, agent: Agent) -> None:
    secret = webhook_rotate_start(agent=agent)
    slot = "next" if agent.webhook_secrets.get("next") == secret else "current"
    _mark_reveal(request, agent, slot)
    messages.success(
        request,
        "New secret made. Both secrets work until you finish the rotation: switch your senders "
        "to the new one first.",
    )


@_section_action
def rotate_finish(request, agent: Agent) -> None:
    try:
        webhook_rotate_finish(agent=agent)
    except WebhookStateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Rotation finished: only the new secret works now.")


# --- What the section shows --------------------------------------------------------------------


def panel_context(request, agent: Agent) -> dict:
    """What the section shows, for the agent page's view to put in its context.

    Consumes a pending reveal for this agent: call it once per render of the page.
    """
    url = request.build_absolute_uri(reverse("webhook", args=[agent.uuid]))
    secrets = webhook_secrets_of(agent)
    reveal = None
    pending = request.session.get(REVEAL_SESSION_KEY) or {}
    slot = pending.get(str(agent.uuid))
    if slot is not None:
        pending = {k: v for k, v in pending.items() if k != str(agent.uuid)}
        request.session[REVEAL_SESSION_KEY] = pending
        if secrets.get(slot):
            reveal = {"slot": slot, "secret": secrets[slot]}
    return {
        "agent": agent,
        "url": url,
        "enabled": agent.webhook_enabled,
        "has_secret": bool(secrets.get("current")),
        "rotating": bool(secrets.get("next")),
        "reveal": reveal,
        "shell_example": shell_example(url),
        "python_example": python_example(url),
    }


def shell_example(url: str) -> str:
    return f"""\
# The secret (whsec_...) in CONVEYOR_WEBHOOK_SECRET; needs curl, openssl and base64.
BODY='{{"hello": "world"}}'
ID="msg_$(date +%s)_$RANDOM"
TS=$(date +%s)
KEY=$(printf '%s' "${{CONVEYOR_WEBHOOK_SECRET#whsec_}}" | base64 -d | od -An -v -tx1 | tr -d ' \\n')
SIG=$(printf '%s.%s.%s' "$ID" "$TS" "$BODY" \\
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$KEY" -binary | base64)
curl -sS -X POST '{url}' \\
  -H 'content-type: application/json' \\
  -H "webhook-id: $ID" -H "webhook-timestamp: $TS" -H "webhook-signature: v1,$SIG" \\
  -d "$BODY"
"""


def python_example(url: str) -> str:
    return f"""\
import base64, hashlib, hmac, json, os, time, urllib.request, uuid

secret = os.environ["CONVEYOR_WEBHOOK_SECRET"]  # whsec_...
body = json.dumps({{"hello": "world"}}).encode()
msg_id, timestamp = f"msg_{{uuid.uuid4().hex}}", str(int(time.time()))
key = base64.b64decode(secret.removeprefix("whsec_"))
signed = f"{{msg_id}}.{{timestamp}}.".encode() + body
signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
request = urllib.request.Request(
    "{url}",
    data=body,
    method="POST",
    headers={{
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{{signature}}",
    }},
)
print(urllib.request.urlopen(request).read().decode())
"""
