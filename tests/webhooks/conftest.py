"""Fixtures of the webhook tests: an agent with its webhook on, and a sender that signs."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.test import Client
from standardwebhooks import Webhook

from agents.webhooks import sign, webhook_enable
from tests.api.conftest import api, make_token  # noqa: F401 (fixtures shared with tests/api)


def standard_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Signed by the Standard Webhooks reference library, independently of Conveyor's code."""
    return Webhook(secret).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body.decode()
    )


class Sender:
    """Another system calling the webhook: ``sender.send(agent, {...}, secret=...)``."""

    def __init__(self):
        self.client = Client(enforce_csrf_checks=True)

    def headers(self, secret, body: bytes, *, msg_id=None, timestamp=None):
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        timestamp = int(time.time()) if timestamp is None else timestamp
        try:
            signature = standard_sign(secret, msg_id, timestamp, body)
        except UnicodeDecodeError:  # the reference signs text only; a body that is not UTF-8
            signature = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }

    def send(self, agent, payload=None, *, secret, raw=None, headers=None, **signing):
        body = raw if raw is not None else json.dumps(payload).encode()
        sent = self.headers(secret, body, **signing) if headers is None else headers
        return self.client.post(
            f"/hooks/{agent.uuid}/", data=body, content_type="application/json", headers=sent
        )


@pytest.fixture
def sender():
    return Sender()


@pytest.fixture
def hooked(make_agent, alice):
    """Alice's echo agent with its webhook on: (agent, secret)."""
    agent = make_agent(alice, name="hooked")
    secret = webhook_enable(agent=agent)
    return agent, secret
