"""The verbs of agents: create, update, pause, resume, set secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from executions.errors import CATEGORIES

from .kinds import KINDS, get_kind
from .kinds.base import ConfigInvalid
from .models import Agent
from .secrets import Secrets

# Fields a caller may set besides kind, config and secrets.
AGENT_FIELDS = (
    "name",
    "description",
    "is_paused",
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_on",
    "timeout",
    "queue",
    "priority",
    "overlap_policy",
)


def agent_validate(*, agent: Agent) -> None:
    """Model validation, the kind's config schema and the operator's limits, in one error."""
    errors: dict[str, list[str]] = {}
    kind = get_kind(agent.kind)
    if kind is None:
        errors["kind"] = [f"Choose one of: {', '.join(sorted(KINDS))}."]
    else:
        try:
            agent.config = kind.clean_config(agent.config)
        except ConfigInvalid as exc:
            errors.update({f"config.{field}": msgs for field, msgs in exc.errors.items()})
    try:
        agent.full_clean(exclude=["secrets", "config"])
    except ValidationError as exc:
        for field, msgs in exc.message_dict.items():
            errors.setdefault(field, []).extend(msgs)
    if agent.timeout and agent.timeout > settings.CONVEYOR_MAX_TIMEOUT:
        errors.setdefault("timeout", []).append(
            f"At most {settings.CONVEYOR_MAX_TIMEOUT} seconds on this installation."
        )
    for field in ("retry_backoff", "retry_backoff_max"):
        value = getattr(agent, field)
        if value is not None and value > settings.CONVEYOR_MAX_BACKOFF:
            errors.setdefault(field, []).append(
                f"At most {settings.CONVEYOR_MAX_BACKOFF} seconds on this installation."
            )
    if agent.max_retries is not None and agent.max_retries > settings.CONVEYOR_MAX_RETRIES:
        errors.setdefault("max_retries", []).append(
            f"At most {settings.CONVEYOR_MAX_RETRIES} on this installation."
        )
    if not isinstance(agent.retry_on, list) or any(c not in CATEGORIES for c in agent.retry_on):
        errors.setdefault("retry_on", []).append(
            f"A list of error categories from: {', '.join(CATEGORIES)}."
        )
    if errors:
        raise ValidationError(errors)


def agent_create(
    *,
    owner,
    name: str,
    kind: str,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    **fields: Any,
) -> Agent:
    """Create an agent after validating it; raises ValidationError with per-field messages."""
    unknown = set(fields) - set(AGENT_FIELDS)
    if unknown:
        raise TypeError(f"Unknown agent fields: {', '.join(sorted(unknown))}")
    agent = Agent(owner=owner, name=name, kind=kind, config=dict(config or {}), **fields)
    agent.secrets = Secrets(secrets or {})
    agent_validate(agent=agent)
    agent.save(force_insert=True)
    return agent


def agent_update(
    *, agent: Agent, secrets: Mapping[str, str | None] | None = None, **fields: Any
) -> Agent:
    """Change an agent. ``secrets`` merges: a value of None removes that secret, names not
    given keep their value (secrets are write-only, so forms leave them blank to keep them)."""
    unknown = set(fields) - set(AGENT_FIELDS) - {"kind", "config"}
    if unknown:
        raise TypeError(f"Unknown agent fields: {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(agent, name, value)
    if secrets:
        merged = agent.secrets.reveal()
        for name, value in secrets.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        agent.secrets = Secrets(merged)
    agent_validate(agent=agent)
    with transaction.atomic():
        agent.save()
    return agent


def agent_pause(*, agent: Agent) -> bool:
    """Pause: no new runs start. Returns False if it was already paused."""
    return bool(Agent.objects.filter(pk=agent.pk, is_paused=False).update(is_paused=True))


def agent_resume(*, agent: Agent) -> bool:
    """Resume a paused agent. Returns False if it was not paused."""
    return bool(Agent.objects.filter(pk=agent.pk, is_paused=True).update(is_paused=False))
