"""The webhook's verbs: turn it on and off, rotate its signing secret, read its secrets.

Used by the agent page (``agents.webhook_views``) and the REST API alike. A service that makes
a secret returns it: that is the only time it leaves Conveyor in clear.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.db import transaction

from .models import Agent
from .secrets import Secrets
from .webhook_signing import generate_secret

logger = logging.getLogger("conveyor.webhooks")


class WebhookStateError(Exception):
    """The webhook is not in a state that allows this (HTTP 409)."""

    def __init__(self, message: str, *, code: str = "conflict"):
        super().__init__(message)
        self.message, self.code = message, code


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
