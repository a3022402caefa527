"""The verbs of agents: create, update, delete, pause, resume, set secrets."""

from __future__ import annotations

import logging
import uuid as uuid_lib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from executions.errors import CATEGORIES
from executions.models import Execution

from .kinds import KINDS, get_kind
from .kinds.base import ConfigInvalid
from .models import Agent
from .secrets import Secrets

logger = logging.getLogger("conveyor.agents")

# How an agent's runs are retried and limited (the pages and the admin show them together).
RUN_POLICY_FIELDS = (
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
# When the agent's owner is told about its runs (the channels are set apart: notify_channels).
NOTIFY_FIELDS = ("notify_on", "notify_retries", "notify_recovery", "notify_steps")
# Capacity and protection (executions.capacity), logs and retention (executions.retention).
LIMIT_FIELDS = (
    "max_concurrency",
    "rate_limit",
    "breaker_threshold",
    "breaker_window",
    "breaker_cooldown",
)
KEEP_FIELDS = ("log_level", "retain_succeeded_days", "retain_failed_days")
# When its owner is told it does worse than usual (ops.baseline).
WATCH_FIELDS = ("regression_p95_percent", "regression_success_points", "regression_min_runs")
# Fields a caller may set besides kind, config, secrets and notify_channels.
AGENT_FIELDS = (
    "name",
    "description",
    "is_paused",
    *RUN_POLICY_FIELDS,
    *LIMIT_FIELDS,
    *KEEP_FIELDS,
    *NOTIFY_FIELDS,
    *WATCH_FIELDS,
)


class AgentBusy(Exception):
    """This agent has runs in progress: cancel them (or wait) before deleting it."""

    code = "agent_busy"

    def __init__(self, message: str | None = None):
        self.message = message or self.__doc__
        super().__init__(self.message)


def agent_validate(*, agent: Agent) -> None:
    """Model validation, the kind's config schema and the operator's limits, in one error."""
    errors: dict[str, list[str]] = {}
    kind = get_kind(agent.kind)
    if kind is None:
        errors["kind"] = [f"Choose one of: {', '.join(sorted(KINDS))}."]
    else:
        try:
            agent.config = kind.clean_config(agent.config, agent=agent)
        except ConfigInvalid as exc:
            errors.update({f"config.{field}": msgs for field, msgs in exc.errors.items()})
    try:
        # The model's one constraint (a name unique per owner, whatever its case) is checked
        # just below, so that the message can name the agent that has it.
        agent.full_clean(exclude=["secrets", "config"], validate_constraints=False)
    except ValidationError as exc:
        for field, msgs in exc.message_dict.items():
            errors.setdefault(field, []).extend(msgs)
    taken = _name_taken(agent) if "name" not in errors else None
    if taken is not None:
        errors.setdefault("name", []).append(_name_taken_message(taken))
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


def _name_taken(agent: Agent) -> str | None:
    """The name of another of the owner's agents that ``agent.name`` equals but for case.

    Compared in Python, not with the database's lower(): SQLite's folds ASCII letters only, and
    the message must be the same on every database. An owner's names are few and short."""
    if agent.owner_id is None or not agent.name:
        return None
    wanted = agent.name.lower()
    others = Agent.objects.filter(owner_id=agent.owner_id).exclude(pk=agent.pk)
    for name in others.values_list("name", flat=True).iterator():
        if name.lower() == wanted:
            return name
    return None


def _name_taken_message(name: str) -> str:
    return f"You already have an agent named “{name}”."


def _save(agent: Agent, **kwargs: Any) -> None:
    """Save after validation. Two requests that pass validation with the same name at once meet
    the unique constraint: the loser gets the validation message, not a database error."""
    try:
        with transaction.atomic():
            agent.save(**kwargs)
    except IntegrityError:
        taken = _name_taken(agent)
        if taken is None:
            raise  # not the name: a bug to see, not a message to word
        raise ValidationError({"name": [_name_taken_message(taken)]}) from None


def agent_create(
    *,
    owner,
    name: str,
    kind: str,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    notify_channels: Iterable[Any] | None = None,
    **fields: Any,
) -> Agent:
    """Create an agent after validating it; raises ValidationError with per-field messages.
    ``notify_channels``: the owner's notification channels (or their UUIDs) to tell."""
    unknown = set(fields) - set(AGENT_FIELDS)
    if unknown:
        raise TypeError(f"Unknown agent fields: {', '.join(sorted(unknown))}")
    agent = Agent(owner=owner, name=name, kind=kind, config=dict(config or {}), **fields)
    agent.secrets = Secrets(secrets or {})
    agent_validate(agent=agent)
    channels = _channels(agent, notify_channels)
    with transaction.atomic():
        _save(agent, force_insert=True)
        if channels:
            agent.notify_channels.set(channels)
    return agent


def _channels(agent: Agent, given: Iterable[Any] | None) -> list | None:
    """The owner's channels named by ``given`` (channels or UUIDs); ValidationError naming any
    that is not one of the owner's."""
    if given is None:
        return None
    from notifications.models import Channel

    wanted, missing = [], []
    mine = Channel.objects.filter(owner_id=agent.owner_id)
    for item in given:
        key = getattr(item, "uuid", item)
        try:
            channel = mine.filter(uuid=uuid_lib.UUID(str(key))).first()
        except ValueError:
            channel = None
        if channel is None:
            missing.append(str(key))
        else:
            wanted.append(channel)
    if missing:
        raise ValidationError(
            {"notify_channels": [f"You have no notification channel {', '.join(missing)}."]}
        )
    return wanted


def agent_update(
    *,
    agent: Agent,
    secrets: Mapping[str, str | None] | None = None,
    notify_channels: Iterable[Any] | None = None,
    **fields: Any,
) -> Agent:
    """Change an agent. ``secrets`` merges: a value of None removes that secret, names not
    given keep their value (secrets are write-only, so forms leave them blank to keep them).
    ``notify_channels``, when given, replaces the channels told about its runs."""
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
    channels = _channels(agent, notify_channels)
    with transaction.atomic():
        _save(agent)
        if channels is not None:
            agent.notify_channels.set(channels)
    return agent


class AgentDeletion(NamedTuple):
    """What deleting an agent takes with it, and how many of its runs stand in the way."""

    executions: int
    schedules: int
    in_progress: int


def agent_delete_preview(*, agent: Agent) -> AgentDeletion:
    """For the confirmation pages; the rule itself is applied by :func:`agent_delete`."""
    runs = Execution.objects.filter(agent=agent).aggregate(
        total=Count("pk"), in_progress=Count("pk", filter=_in_progress())
    )
    return AgentDeletion(runs["total"], agent.schedules.count(), runs["in_progress"])


def agent_delete(*, agent: Agent) -> None:
    """Delete an agent with its executions (attempts, events, logs) and schedules.

    Refused with :class:`AgentBusy` while a flow of its owner has a step that runs it, and
    while any of its runs is queued, running or retrying: a
    worker would be left holding a run whose rows are gone. The check runs with the agent's row
    locked. A run being started meanwhile cannot outlive the agent: Postgres checks its foreign
    key when its transaction commits, with a key-share lock on that row, so the run either
    committed before the lock (and is counted here) or its commit waits for this one and then
    fails, the agent being gone. An agent already deleted is a no-op.
    """
    with transaction.atomic():
        locked = Agent.objects.select_for_update().filter(pk=agent.pk).first()
        if locked is None:
            return
        users = flows_using(agent=locked)
        if users:
            names = ", ".join(f"“{flow.name}”" for flow in users)
            one = len(users) == 1
            raise AgentBusy(
                f"“{locked.name}” is a step of {'flow' if one else 'flows'} {names}: remove "
                f"{'that step (or the flow)' if one else 'those steps (or the flows)'} first."
            )
        busy = Execution.objects.filter(_in_progress(), agent=locked).count()
        if busy:
            runs = "1 run" if busy == 1 else f"{busy} runs"
            raise AgentBusy(
                f"“{locked.name}” has {runs} in progress (queued, running or retrying): "
                "cancel them, or wait for them to finish, before deleting it."
            )
        locked.delete()
    logger.info(
        "agent deleted",
        extra={"action": "agent_deleted", "agent_id": str(agent.uuid), "owner": agent.owner_id},
    )


def flows_using(*, agent: Agent) -> list[Agent]:
    """The owner's flows that have a step running ``agent``."""
    from .kinds.flow import step_agents

    wanted = str(agent.uuid)
    flows = Agent.objects.filter(owner_id=agent.owner_id, kind="flow").exclude(pk=agent.pk)
    return [flow for flow in flows if wanted in step_agents(flow.config)]


def _in_progress() -> Q:
    return Q(status__in=Execution.ACTIVE_STATUSES)


def agent_pause(*, agent: Agent) -> bool:
    """Pause: no new runs start. Returns False if it was already paused."""
    return bool(
        Agent.objects.filter(pk=agent.pk, is_paused=False).update(
            is_paused=True, version=F("version") + 1
        )
    )


def agent_resume(*, agent: Agent) -> bool:
    """Resume a paused agent: the runs that waited for it go to the workers (once committed).
    Returns False if it was not paused."""
    from executions.capacity import agent_key, release_all

    with transaction.atomic():
        resumed = bool(
            Agent.objects.filter(pk=agent.pk, is_paused=True).update(
                is_paused=False, version=F("version") + 1
            )
        )
        if resumed:
            agent.is_paused = False
            release_all(agent_key(agent), Execution.WaitReason.PAUSED, at=timezone.now())
    return resumed
