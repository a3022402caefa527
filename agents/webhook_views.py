"""The webhook section of the agent page: turn it on and off, rotate the secret, see it once.

A new secret is revealed once: the view that creates it leaves a "reveal pending" mark in the
session (which secret, never its value); the next render of the agent page shows the secret
and removes the mark, so a reload no longer shows it.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import webhooks
from .models import Agent

REVEAL_SESSION_KEY = "conveyor.webhook_reveal"


def _owned_agent(request, uuid) -> Agent:
    return get_object_or_404(Agent, uuid=uuid, owner=request.user)


def _back(agent: Agent):
    return redirect(reverse("agents:detail", args=[agent.uuid]) + "#webhook")


def _mark_reveal(request, agent: Agent, slot: str) -> None:
    pending = dict(request.session.get(REVEAL_SESSION_KEY, {}))
    pending[str(agent.uuid)] = slot
    request.session[REVEAL_SESSION_KEY] = pending


@login_required
@require_POST
def enable(request, uuid):
    agent = _owned_agent(request, uuid)
    if webhooks.webhook_enable(agent=agent) is not None:
        _mark_reveal(request, agent, "current")
        messages.success(request, "Webhook on. Copy the signing secret below: it is shown once.")
    else:
        messages.success(request, "Webhook on: signed calls to its URL start runs again.")
    return _back(agent)


@login_required
@require_POST
def disable(request, uuid):
    agent = _owned_agent(request, uuid)
    webhooks.webhook_disable(agent=agent)
    messages.info(request, "Webhook off: calls to its URL are refused (404).")
    return _back(agent)


@login_required
@require_POST
def rotate(request, uuid):
    agent = _owned_agent(request, uuid)
    secret = webhooks.webhook_rotate_start(agent=agent)
    slot = "next" if agent.webhook_secrets.get("next") == secret else "current"
    _mark_reveal(request, agent, slot)
    messages.success(
        request,
        "New secret made. Both secrets work until you finish the rotation: switch your senders "
        "to the new one first.",
    )
    return _back(agent)


@login_required
@require_POST
def rotate_finish(request, uuid):
    agent = _owned_agent(request, uuid)
    try:
        webhooks.webhook_rotate_finish(agent=agent)
    except webhooks.WebhookStateError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Rotation finished: only the new secret works now.")
    return _back(agent)


# --- What the section shows --------------------------------------------------------------------


def panel_context(request, agent: Agent) -> dict:
    """The section's context; consumes a pending reveal for this agent."""
    url = request.build_absolute_uri(reverse("webhook", args=[agent.uuid]))
    secrets = webhooks.webhook_secrets_of(agent)
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
