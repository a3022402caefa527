"""The verbs of executions. Views, API, admin actions, commands, tasks and the recovery passes
call these; each rule lives here once.

* Starting a run: :func:`execution_request` (every surface), :func:`execution_retry`.
* An attempt: :func:`execution_claim`, :func:`attempt_succeed`, :func:`attempt_fail` (the one
  place that words "retry or fail", for the runner, the hard time limit and the reaper alike),
  :func:`attempt_close_cancelled`.
* Stopping: :func:`execution_cancel`, :func:`execution_enforce_cancel`.

Every status change is a compare-and-set: :func:`transition` (an UPDATE on the status and
attempt the caller saw, plus an ExecutionEvent in the same transaction) or, on Postgres, the
claim and the successful finish of ``executions.fastpath``, which build their statements from
the same field values (:func:`claim_fields`, :func:`success_fields`, :func:`attempt_closed`) and
are held to the ORM path by a twin test. When another process got there first nothing is
overwritten and the caller learns it lost. Publishing happens only in ``transaction.on_commit``.
"""

from __future__ import annotations

import logging
import math
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.kinds import get_kind
from agents.kinds.base import InvalidInputError
from agents.models import Agent
from common import instances

from .errors import CATEGORIES, Category, ClassifiedError
from .humanize import seconds_in_words
from .models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog
from .signals import execution_ended, execution_retrying

logger = logging.getLogger("conveyor.executions")

Status = Execution.Status
WaitReason = Execution.WaitReason
_UNSET: Any = object()


class ExecutionRefused(Exception):
    """The request does not fit the execution's or agent's current state (HTTP 409).

    ``existing``: the execution that stands in the way, when there is one (e.g. the retry
    that an "already retried" refusal points to).
    """

    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None, existing=None):
        super().__init__(message)
        self.message = message
        self.existing = existing
        if code:
            self.code = code


def transition(
    execution: Execution,
    *,
    to: str,
    at: datetime,
    reason: str = "",
    event_data: dict | None = None,
    **fields: Any,
) -> bool:
    """Move ``execution`` from the status it was read with to ``to``, if nobody else did.

    1. Refuse a move the state machine does not allow (terminal rows never move).
    2. UPDATE ... WHERE status = <seen status> AND attempt = <seen attempt>.
    3. Only if exactly one row changed: write the event and update the instance.
    Returns whether this call won.
    """
    from_status = execution.status
    if to not in Execution.ALLOWED_TRANSITIONS[from_status]:
        return False
    # savepoint=False: inside a caller's transaction (claim, finish) this joins it instead of
    # paying two more round trips for a savepoint; on its own it is a transaction.
    with transaction.atomic(savepoint=False):
        changed = Execution.objects.filter(
            pk=execution.pk, status=from_status, attempt=execution.attempt
        ).update(status=to, **fields)
        if changed != 1:
            return False
        new_event(
            execution_id=execution.pk,
            from_status=from_status,
            to=to,
            at=at,
            attempt=fields.get("attempt", execution.attempt),
            reason=reason,
            data=event_data,
        ).save(force_insert=True)
        execution.status = to
        for name, value in fields.items():
            setattr(execution, name, value)
        if from_status == Status.RUNNING:
            from .capacity import left_running

            left_running(execution)
        if to in Execution.TERMINAL_STATUSES:
            ended(execution)
        elif to == Status.RETRYING:
            execution_retrying.send(sender=Execution, execution=execution)
    return True


def ended(execution: Execution) -> None:
    """An execution reached a final state (inside the transaction that wrote it): tell the
    ``execution_ended`` receivers, then, once committed, advance the flow it is a step of. If
    that message is lost (the process dies first), the flows' recovery pass advances it."""
    execution_ended.send(sender=Execution, execution=execution)
    if execution.parent_id is not None:
        flow_id = execution.parent_id

        def advance_flow():  # named: Django logs a robust callback's failure by its __qualname__
            from .tasks import advance_flow as task

            task.apply_async(args=[flow_id], queue=settings.CONVEYOR_MAINTENANCE_QUEUE)

        transaction.on_commit(advance_flow, robust=True)


def execution_request(
    *,
    agent: Agent,
    trigger: str,
    input: Any = None,
    idempotency_key: str | None = None,
    not_before: datetime | None = None,
    hold: bool = False,
    retry_of: Execution | None = None,
    parent: Execution | None = None,
    step_index: int | None = None,
    step_key: str = "",
    retry_override: dict | None = None,
    schedule=None,
    scheduled_for: datetime | None = None,
    reason: str = "",
    at: datetime | None = None,
    to_publish: list | None = None,
    insert_later: list | None = None,
) -> Execution:
    """The one way to start a run: page, API, webhook, schedule, command, retry (and flows).

    1. The agent's kind checks the input (``InvalidInputError``, HTTP 422, with its message).
    2. A paused agent starts nothing (``ExecutionRefused`` "agent_paused", HTTP 409).
    3. Idempotency: a key already used for this agent returns that execution (``is_replay``
       True, nothing new is queued) when the input is the same, and is refused
       (``ExecutionRefused`` "idempotency_key_reused") when it differs.
    4. The execution is written queued with why it waits: ``delayed`` until ``not_before``,
       ``held`` (overlap policy; released by the recovery pass) or ``broker``, in which case it
       is published once the transaction commits (``to_publish``: appended there as
       ``(execution, agent)`` instead, for the caller to publish many at once with
       :func:`publish_many_on_commit`).

    ``insert_later`` (on Postgres, without an idempotency key): step 4's row is not written
    but appended there, for the caller to write many at once with :func:`executions_insert`
    (the schedules' dispatcher); the execution returned has no key yet.

    :func:`execution_request_batch` starts many runs of one agent by the same steps.
    """
    at = at or timezone.now()
    kind = _kind(agent, trigger)
    if kind is not None:
        kind.validate_input(agent.config, input)
    _refuse_if_paused(agent)
    if idempotency_key is not None:
        existing = Execution.objects.filter(agent=agent, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _replay(existing, input)
    execution = _new_execution(
        agent,
        kind,
        trigger=trigger,
        input=input,
        idempotency_key=idempotency_key,
        retry_of=retry_of,
        parent=parent,
        step_index=step_index,
        step_key=step_key,
        retry_override=retry_override or None,
        not_before=not_before,
        schedule=schedule,
        scheduled_for=scheduled_for,
        created_at=at,
        **_initial_wait(agent, not_before=not_before, hold=hold, at=at),
    )
    from . import fastpath

    if insert_later is not None and idempotency_key is None and fastpath.enabled():
        insert_later.append((execution, _created_event(execution, reason=reason)))
        return execution
    try:
        # On Postgres one statement, atomic by itself: outside a caller's transaction it needs
        # none of its own, whose BEGIN and COMMIT would each be one more round trip. Otherwise a
        # savepoint only when a duplicate key can make the insert fail inside a caller's
        # transaction (bulk creation in one transaction pays no extra round trips otherwise).
        alone = fastpath.enabled() and not transaction.get_connection().in_atomic_block
        with nullcontext() if alone else transaction.atomic(savepoint=idempotency_key is not None):
            if fastpath.enabled():
                fastpath.create(execution, _created_event(execution, reason=reason))
            else:
                execution.save(force_insert=True)
                _created_event(execution, reason=reason).save(force_insert=True)
    except IntegrityError:
        _refuse_if_deleted(agent)
        if idempotency_key is None:
            raise
        # Another request with the same key won the race between our check and our insert.
        return _replay(Execution.objects.get(agent=agent, idempotency_key=idempotency_key), input)
    execution.is_replay = False
    if execution.wait_reason == WaitReason.BROKER:
        if to_publish is not None:
            to_publish.append((execution, agent))
        else:
            publish_on_commit(execution, agent)
    logger.debug(
        "execution created",
        extra={"action": "execution_created", "execution_id": str(execution.uuid)},
    )
    return execution


def executions_insert(pending: list, *, to_publish: list) -> list[Execution]:
    """Write the runs ``execution_request(insert_later=pending)`` prepared, with their creation
    events, in one statement (Postgres). A run that another writer started first (a unique
    constraint, e.g. a schedule's slot) is left out, as ``execution_request``'s insert would
    fail for it. Those waiting for a worker are appended to ``to_publish``; returns the runs
    written."""
    from . import fastpath

    if not pending:
        return []
    written = fastpath.create_many(
        [execution for execution, _ in pending],
        [event for _, event in pending],
        skip_conflicts=True,
    )
    for execution in written:
        execution.is_replay = False
        if execution.wait_reason == WaitReason.BROKER:
            to_publish.append((execution, execution.agent))
    return written


_TRIGGERS = frozenset(Execution.Trigger.values)


def _kind(agent: Agent, trigger: str):
    if trigger not in _TRIGGERS:
        raise ValueError(f"Unknown trigger {trigger!r}.")
    return get_kind(agent.kind)


def _refuse_if_paused(agent: Agent) -> None:
    if agent.is_paused:
        raise ExecutionRefused(
            f"The agent “{agent.name}” is paused. Resume it to start new runs.", code="agent_paused"
        )


def _initial_wait(agent: Agent, *, not_before: datetime | None, hold: bool, at: datetime) -> dict:
    """Why a new run waits: its time (``delayed``), the run in its way (``held``), a slot of
    its limits (others already wait, or every slot is busy: in line at once), or a worker."""
    if not_before is not None and not_before > at:
        return {"wait_reason": WaitReason.DELAYED, "wait_until": not_before}
    if hold:
        return {"wait_reason": WaitReason.HELD}
    from .capacity import gates, initial_wait

    gate_list = gates(agent)
    return (gate_list and initial_wait(agent, gate_list)) or {
        "wait_reason": WaitReason.BROKER,
        "published_at": at,
    }


def _new_execution(
    agent: Agent,
    kind,
    *,
    retry_of: Execution | None = None,
    parent: Execution | None = None,
    schedule=None,
    **fields: Any,
) -> Execution:
    """An unsaved queued execution of ``agent`` (``fields``: its trigger, input, wait...)."""
    execution = instances.new(
        Execution,
        agent_id=agent.pk,
        owner_id=agent.owner_id,
        status=Status.QUEUED,
        celery_task_id=str(uuid.uuid4()),
        agent_version=agent.version,
        **fields,
    )
    # The related rows given, set as Execution(agent=..., ...) sets them (and keeps them); one
    # not given is None already, and read as None without a query.
    execution.agent = agent
    for name, related in (("retry_of", retry_of), ("parent", parent), ("schedule", schedule)):
        if related is not None:
            setattr(execution, name, related)
    # A flow makes one attempt, open while its steps run; its steps retry, not the flow.
    is_flow = getattr(kind, "is_flow", False)
    execution.max_attempts = 1 if is_flow else execution.retry_policy.max_attempts
    return execution


def _created_event(execution: Execution, *, reason: str = "") -> ExecutionEvent:
    return new_event(
        execution_id=execution.pk,
        from_status="",
        to=Status.QUEUED,
        at=execution.created_at,
        attempt=0,
        reason=reason or _created_reason(execution.trigger, execution.retry_of),
        data={"wait_reason": execution.wait_reason},
    )


def _refuse_if_deleted(agent: Agent) -> None:
    # Foreign keys are checked when the transaction commits: the agent was deleted since it was
    # read (its runs were all finished then, or agent_delete would have refused).
    if not Agent.objects.filter(pk=agent.pk).exists():
        raise ExecutionRefused(
            f"The agent “{agent.name}” was deleted; nothing was started.", code="agent_deleted"
        ) from None


# At most this many runs in one call of execution_request_batch (and one API request).
BATCH_MAX = 1000


@dataclass(frozen=True)
class RunSpec:
    """One run of a batch: its input, idempotency key and earliest start."""

    input: Any = None
    idempotency_key: str | None = None
    not_before: datetime | None = None


class BatchRefused(Exception):
    """Some runs of a batch cannot start, so none was: ``errors`` maps each one's index to
    (the field at fault: "input" or "idempotency_key", why). ``code``: "invalid_input"
    (HTTP 422) or "idempotency_key_reused" (HTTP 409)."""

    def __init__(self, errors: dict[int, tuple[str, str]], *, code: str):
        self.errors = dict(sorted(errors.items()))
        self.code = code
        listed = "; ".join(
            f"runs[{i}].{field}: {message.rstrip('.')}"
            for i, (field, message) in list(self.errors.items())[:5]
        )
        more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        noun = "run" if len(self.errors) == 1 else "runs"
        self.message = f"{len(self.errors)} {noun} of the batch cannot start: {listed}{more}."
        super().__init__(self.message)


def execution_request_batch(
    *, agent: Agent, trigger: str, runs: list[RunSpec], at: datetime | None = None
) -> list[Execution]:
    """Start many runs of ``agent`` at once: the steps of :func:`execution_request` for each,
    with a few statements for all of them.

    1. Every run is checked before any is written: its input (the kind's rule), and its
       idempotency key (not twice in the batch; a key already used with another input). Any
       bad run refuses the whole batch (``BatchRefused``, every bad run by index).
    2. Runs whose key was already used with the same input are replays (``is_replay``); the
       others are inserted with their events in one transaction (bulk inserts) and those
       waiting for a worker are published after commit, in one pipelined round trip.

    Returns the executions in the order of ``runs``.
    """
    if len(runs) > BATCH_MAX:
        raise ValueError(f"At most {BATCH_MAX} runs in one batch.")
    at = at or timezone.now()
    kind = _kind(agent, trigger)
    errors: dict[int, tuple[str, str]] = {}
    first_of_key: dict[str, int] = {}
    for index, run in enumerate(runs):
        if kind is not None:
            try:
                kind.validate_input(agent.config, run.input)
            except InvalidInputError as exc:
                errors[index] = ("input", exc.message)
                continue
        key = run.idempotency_key
        if key is not None:
            if key in first_of_key:
                errors[index] = (
                    "idempotency_key",
                    f"The same key as runs[{first_of_key[key]}]: one key, one run.",
                )
            first_of_key.setdefault(key, index)
    if errors:
        raise BatchRefused(errors, code="invalid_input")
    _refuse_if_paused(agent)
    try:
        return _insert_batch(agent, kind, trigger, runs, at=at)
    except IntegrityError:
        _refuse_if_deleted(agent)
        if not first_of_key:
            raise
        # A concurrent request took one of the keys between the check and the insert: the
        # check, done again, now finds it.
        return _insert_batch(agent, kind, trigger, runs, at=at)


def _insert_batch(agent: Agent, kind, trigger: str, runs: list[RunSpec], *, at: datetime):
    keys = [run.idempotency_key for run in runs if run.idempotency_key is not None]
    existing = {
        execution.idempotency_key: execution
        for execution in Execution.objects.filter(agent=agent, idempotency_key__in=keys)
    }
    reused = {
        index: ("idempotency_key", "This idempotency key was already used with a different input.")
        for index, run in enumerate(runs)
        if run.idempotency_key in existing and existing[run.idempotency_key].input != run.input
    }
    if reused:
        raise BatchRefused(reused, code="idempotency_key_reused")
    # The runs that may start now share one wait (the limits' answer does not change with runs
    # that are not running yet) and so one prepared row: each is a copy of it with its own
    # values, much cheaper than building a model instance per run.
    ready: Execution | None = None
    executions, new = [], []
    for run in runs:
        if run.idempotency_key in existing:
            executions.append(_replay(existing[run.idempotency_key], run.input))
            continue
        fields = {"input": run.input, "idempotency_key": run.idempotency_key}
        if run.not_before is not None and run.not_before > at:
            wait = _initial_wait(agent, not_before=run.not_before, hold=False, at=at)
            execution = _new_execution(
                agent, kind, trigger=trigger, not_before=run.not_before, created_at=at, **fields
            )
            execution.__dict__.update(wait)
        else:
            if ready is None:
                ready = _new_execution(
                    agent,
                    kind,
                    trigger=trigger,
                    created_at=at,
                    **_initial_wait(agent, not_before=None, hold=False, at=at),
                )
            execution = _copy(ready, not_before=run.not_before, **fields)
        execution.is_replay = False
        executions.append(execution)
        new.append(execution)
    from . import fastpath

    with transaction.atomic():
        if new and fastpath.enabled():
            fastpath.create_many(new, _created_events(new))
        elif new:
            Execution.objects.bulk_create(new)
            ExecutionEvent.objects.bulk_create(_created_events(new))
    publish_many_on_commit([(e, agent) for e in new if e.wait_reason == WaitReason.BROKER])
    logger.debug(
        "executions created",
        extra={"action": "execution_batch_created", "agent": str(agent.uuid), "count": len(new)},
    )
    return executions


def _created_events(executions: list[Execution]) -> list[ExecutionEvent]:
    """The creation event of each execution (``_created_event``: copies of one per wait)."""
    events, template = [], None
    for execution in executions:
        if template is None or template.data["wait_reason"] != execution.wait_reason:
            template = _created_event(execution)
        events.append(_copy(template, execution_id=execution.pk))
    return events


def _copy(template, **fields):
    """A new unsaved row like ``template`` (a model instance) with ``fields`` changed, a new
    ``uuid`` and ``celery_task_id`` where the model has them."""
    row = instances.copied(template, **fields)
    if "uuid" in row.__dict__:
        row.uuid = uuid.uuid4()
    if "celery_task_id" in row.__dict__:
        row.celery_task_id = str(uuid.uuid4())
    return row


def _replay(existing: Execution, input: Any) -> Execution:
    if existing.input != input:
        raise ExecutionRefused(
            "This idempotency key was already used with a different input.",
            code="idempotency_key_reused",
        )
    existing.is_replay = True
    return existing


def _created_reason(trigger: str, retry_of: Execution | None) -> str:
    if retry_of is not None:
        return f"Retry of execution {retry_of.uuid}"
    return f"Started ({Execution.Trigger(trigger).label.lower()})"


def publish_on_commit(
    execution: Execution, agent: Agent, *, countdown: float | None = None
) -> None:
    """Hand the execution's next attempt to the broker once the transaction commits.

    robust: a broker that is down at commit must not turn a saved execution into an error page;
    the row stays waiting in the broker state and the republish pass sends it again later.
    """
    execution_id, attempt, task_id = execution.pk, execution.attempt, execution.celery_task_id

    def publish():  # named: Django logs a robust callback's failure by its __qualname__
        enqueue(execution_id, agent, attempt=attempt, task_id=task_id, countdown=countdown)

    transaction.on_commit(publish, robust=True)


def publish_many_on_commit(runs: list[tuple[Execution, Agent]]) -> None:
    """:func:`publish_on_commit` for many ``(execution, its agent)``, in one pipelined round
    trip to a Redis broker (``executions.broker``). Robust, like it."""
    from .broker import Message, publish_many

    messages = [Message(e.pk, agent, e.attempt, e.celery_task_id) for e, agent in runs]
    if not messages:
        return

    def publish_many_runs():  # named: Django logs a robust callback's failure by its __qualname__
        publish_many(messages)

    transaction.on_commit(publish_many_runs, robust=True)


def execution_publish(*, execution: Execution, at: datetime) -> bool:
    """Hand a waiting execution to the broker: a delayed or held one whose turn has come (it now
    waits for a worker, ``broker``), or one whose message was lost (sent again).

    A compare-and-set on what the caller read (status, attempt, wait reason, last publication),
    so that of two ticks only one sends it. Published on commit. Returns whether it won.
    """
    fields: dict[str, Any] = {"published_at": at}
    if execution.status == Status.QUEUED:
        fields.update(wait_reason=WaitReason.BROKER, wait_until=None)
    return publish_if_unchanged(execution, seen=("published_at",), fields=fields)


def publish_if_unchanged(execution: Execution, *, seen: tuple[str, ...], fields: dict) -> bool:
    """Write ``fields`` and publish the run's next attempt on commit, if its status, attempt,
    wait reason and the ``seen`` fields are still what the caller read (a compare-and-set: of
    two passes only one sends it). Returns whether it won."""
    match = {name: getattr(execution, name) for name in ("status", "attempt", "wait_reason", *seen)}
    with transaction.atomic():
        won = Execution.objects.filter(pk=execution.pk, **match).update(**fields)
        if won:
            publish_on_commit(execution, execution.agent)
    if won:
        for name, value in fields.items():
            setattr(execution, name, value)
    return bool(won)


def enqueue(
    execution_id: int,
    agent: Agent,
    *,
    attempt: int,
    task_id: str | None = None,
    countdown: float | None = None,
    producer=None,
) -> None:
    """Publish "run execution X" for its next attempt, with the agent's queue and limits
    (through ``producer`` when given: a batch of publications).

    ``retries`` carries the number of attempts already made, so that the worker can tell a
    stale duplicate message from the one for the current attempt.

    A message sent now (no countdown, no producer) goes through ``executions.broker``, which
    builds it as Celery does at a fraction of the cost where it can.
    """
    from .broker import Message, publish_many

    if task_id is None:
        task_id = (
            Execution.objects.filter(pk=execution_id)
            .values_list("celery_task_id", flat=True)
            .first()
        )
    if countdown is None and producer is None:
        publish_many([Message(execution_id, agent, attempt, task_id)])
        return
    enqueue_through_celery(
        execution_id,
        agent,
        attempt=attempt,
        task_id=task_id,
        countdown=countdown,
        producer=producer,
    )


def enqueue_through_celery(
    execution_id: int,
    agent: Agent,
    *,
    attempt: int,
    task_id: str,
    countdown: float | None = None,
    producer=None,
) -> None:
    """:func:`enqueue` by Celery's ``apply_async``."""
    from .broker import run_options
    from .tasks import run_execution, start_flow

    if getattr(agent.kind_impl, "is_flow", False):
        # No worker runs a flow: this message lays out its steps and starts the first.
        start_flow.apply_async(
            args=[execution_id],
            task_id=task_id,
            queue=agent.queue,
            retries=attempt,
            producer=producer,
        )
        return
    run_execution.apply_async(
        **run_options(execution_id, agent),
        task_id=task_id,
        retries=attempt,
        countdown=countdown,
        producer=producer,
    )


# --- An attempt ---------------------------------------------------------------------------------
#
# The field values below are the rule for each step; the ORM path and executions.fastpath both
# write exactly these.

# (number, max_attempts); the fast path formats the same text in SQL, where max_attempts is read.
CLAIM_REASON = "Attempt %s of %s started"


def claim_fields(*, number: int, at: datetime) -> dict[str, Any]:
    """What a claim sets besides ``status`` and ``started_at`` (kept from the first attempt)."""
    return {
        "attempt": number,
        "heartbeat_at": at,
        "next_attempt_at": None,
        "wait_reason": WaitReason.NONE,
        "wait_until": None,
        "waits_on": "",
        "progress": 0,
        "progress_message": "",
    }


def success_fields(*, result: Any, at: datetime, started_at: datetime) -> dict[str, Any]:
    return {
        "result": result,
        "progress": 100,
        "finished_at": at,
        "duration": at - started_at,
        "heartbeat_at": None,
        "error_category": "",
        "error_title": "",
        "error_message": "",
        "error_detail": "",
    }


def success_reason(number: int) -> str:
    return f"Attempt {number} succeeded"


def attempt_closed(
    *,
    outcome: str,
    at: datetime,
    category: str = "",
    message: str = "",
    retry_delay: float | None = None,
) -> dict[str, Any]:
    """The fields that close an ExecutionAttempt."""
    if not category and outcome == ExecutionAttempt.Outcome.CANCELLED:
        category = Category.CANCELLED
    return {
        "finished_at": at,
        "outcome": outcome,
        "error_category": category,
        "error_message": message,
        "retry_delay": retry_delay,
    }


def new_attempt(*, execution_id: int, number: int, at: datetime, worker: str) -> ExecutionAttempt:
    return instances.new(
        ExecutionAttempt,
        execution_id=execution_id,
        number=number,
        started_at=at,
        worker=worker[:200],
    )


def new_event(
    *,
    execution_id: int,
    from_status: str,
    to: str,
    at: datetime,
    attempt: int,
    reason: str = "",
    data: dict | None = None,
) -> ExecutionEvent:
    return instances.new(
        ExecutionEvent,
        execution_id=execution_id,
        from_status=from_status,
        to_status=to,
        at=at,
        attempt=attempt,
        reason=reason,
        data=data or {},
    )


def execution_claim(
    *,
    execution_id: int,
    expected_attempt: int,
    worker: str,
    at: datetime,
    agent_id: int | None = None,
) -> tuple[Execution, ExecutionAttempt] | None:
    """Compare-and-set the execution to running for attempt ``expected_attempt + 1``.

    Only an execution that is queued or retrying with exactly ``expected_attempt`` attempts made
    is claimed; a duplicate or stale message, or a finished or cancelled execution, claims
    nothing (None). The claimed execution comes with its agent; the attempt is opened.

    ``agent_id`` (the message's): on Postgres, an agent without limits that this process has
    read before is not read again; the claim itself checks that its version is still the one
    read (``fastpath.claim``), else the agent is read afresh and the claim made again.
    """
    from . import capacity, fastpath

    kwargs = {
        "execution_id": execution_id,
        "expected_attempt": expected_attempt,
        "worker": worker,
        "at": at,
    }
    # An agent with limits is claimed through them (executions.capacity); the others take the
    # one-statement claim on Postgres, or the ORM's, which reads the agent with the run.
    if fastpath.enabled():
        kept = fastpath.kept_agent(agent_id)
        if kept is not None:
            claimed = fastpath.claim(**kwargs, agent=kept, agent_version=kept.version)
            if claimed is not None:
                return claimed
        agent = Agent.objects.filter(executions__pk=execution_id).first()
        gated = agent is not None and capacity.gates(agent)
        if agent is not None and not gated:
            fastpath.keep_agent(agent)
        claimed = None if gated or agent is None else fastpath.claim(**kwargs, agent=agent)
    else:
        claimed = _claim(**kwargs, ungated_only=True)
        gated = isinstance(claimed, Gated)
        agent = claimed.agent if gated else None
    if gated:
        claimed = capacity.claim(**kwargs, agent=agent, gate_list=capacity.gates(agent))
    if claimed is None:
        logger.info(
            "execution not claimable (missing, duplicate, stale or finished message)",
            extra={"action": "execution_claim_skipped", "execution_pk": execution_id},
        )
    return claimed


def retry_message_lost(
    *, execution_id: int, expected_attempt: int, at: datetime
) -> tuple[int, int] | None:
    """A message for attempt ``expected_attempt + 1`` that finds the execution waiting to retry
    after exactly that attempt: the message of that retry may have been lost with the process
    that was to send it (killed between the failed attempt's commit and ``Task.retry``; the
    broker then hands the older message back). Returns ``(countdown, max_attempts)`` to send
    the retry again, or None. A copy too many claims nothing: claims are compare-and-sets."""
    row = (
        Execution.objects.filter(
            pk=execution_id, status=Status.RETRYING, attempt=expected_attempt + 1
        )
        .values_list("wait_until", "max_attempts")
        .first()
    )
    if row is None:
        return None
    wait_until, max_attempts = row
    countdown = max(0, math.ceil((wait_until - at).total_seconds())) if wait_until else 0
    logger.warning(
        "retry sent again: its message may have been lost",
        extra={"action": "execution_retry_resent", "execution_pk": execution_id},
    )
    return countdown, max_attempts


@dataclass(frozen=True)
class Gated:
    """What ``_claim(ungated_only=True)`` answers for a run whose agent has limits: not claimed
    there; ``capacity.claim`` claims it through the limits of ``agent``."""

    agent: Agent


def _claim(
    *, execution_id: int, expected_attempt: int, worker: str, at: datetime, ungated_only=False
) -> tuple[Execution, ExecutionAttempt] | Gated | None:
    """The ORM's claim: the run and its new attempt, or None when it was not claimable.
    ``ungated_only``: a run whose agent has limits is not claimed here (``Gated``)."""
    from .capacity import gates

    with transaction.atomic():
        execution = (
            Execution.objects.select_related("agent")
            .filter(
                pk=execution_id,
                status__in=(Status.QUEUED, Status.RETRYING),
                attempt=expected_attempt,
            )
            .first()
        )
        if execution is None:
            return None
        if ungated_only and gates(execution.agent):
            return Gated(execution.agent)
        number = expected_attempt + 1
        won = transition(
            execution,
            to=Status.RUNNING,
            at=at,
            reason=CLAIM_REASON % (number, execution.max_attempts),
            started_at=execution.started_at or at,
            **claim_fields(number=number, at=at),
        )
        if not won:
            return None
        attempt = new_attempt(execution_id=execution.pk, number=number, at=at, worker=worker)
        attempt.save(force_insert=True)
    return execution, attempt


def attempt_succeed(
    *,
    execution: Execution,
    attempt: ExecutionAttempt,
    result: Any,
    at: datetime,
    logs: list[ExecutionLog] | tuple = (),
) -> bool:
    """Finish a running attempt as succeeded, with its buffered logs. Returns whether it won;
    if a cancel came first the attempt is closed as cancelled and the execution stays so."""
    from . import fastpath

    logs = list(logs)
    if fastpath.enabled():
        if fastpath.finish_success(
            execution=execution, attempt=attempt, logs=logs, result=result, at=at
        ):
            execution.status = Status.SUCCEEDED
            for name, value in success_fields(
                result=result, at=at, started_at=execution.started_at
            ).items():
                setattr(execution, name, value)
            from .capacity import left_running

            left_running(execution)
            ended(execution)
            return True
        logs = []  # the statement wrote them whatever its outcome; the loss is recorded below
    with transaction.atomic():
        won = transition(
            execution,
            to=Status.SUCCEEDED,
            at=at,
            reason=success_reason(attempt.number),
            **success_fields(result=result, at=at, started_at=execution.started_at),
        )
        outcome = ExecutionAttempt.Outcome.SUCCEEDED if won else _lost_to(execution)
        _close_attempt(execution.pk, attempt.number, **attempt_closed(outcome=outcome, at=at))
        ExecutionLog.objects.bulk_create(logs)
    return won


def attempt_fail(
    *,
    execution: Execution,
    number: int,
    error: ClassifiedError,
    at: datetime,
    logs: list[ExecutionLog] | tuple = (),
    publish_retry: bool = False,
) -> int | None:
    """A running attempt failed: retry it after a wait, or fail the execution.

    The one place that decides and words it, whoever noticed the failure (the runner, the
    worker's hard time limit, the reaper). The agent's policy decides whether the error's
    category is retried and how long to wait; with attempts left the execution moves to
    ``retrying`` (waiting, ``backoff``), otherwise to ``failed``. The attempt is closed (as
    ``lost`` for a lost worker), the buffered logs and one error line are written.

    Returns the wait in seconds when a retry follows, else None. With ``publish_retry`` the
    retry is published on commit with that countdown (the runner instead lets Celery's
    ``Task.retry`` re-publish its own message).
    """
    agent = execution.agent
    policy = execution.retry_policy
    info = CATEGORIES[error.category]
    retries_category = policy.retries(category=error.category, retryable=error.retryable)
    will_retry = retries_category and number < execution.max_attempts
    common = {
        "error_category": error.category,
        "error_title": info.title,
        "error_detail": error.detail,
        "heartbeat_at": None,
    }
    countdown = None
    with transaction.atomic():
        if will_retry:
            countdown = policy.countdown(attempt=number, retry_after=error.retry_after)
            next_at = at + timedelta(seconds=countdown)
            won = transition(
                execution,
                to=Status.RETRYING,
                at=at,
                reason=f"Attempt {number} failed ({error.category}); retry in {countdown} s",
                event_data={"countdown": countdown, "category": error.category},
                next_attempt_at=next_at,
                wait_reason=WaitReason.BACKOFF,
                wait_until=next_at,
                error_message=(
                    f"{error.reason} Conveyor will try again after a "
                    f"{seconds_in_words(countdown)} wait (attempt {number + 1} of "
                    f"{execution.max_attempts})."
                ),
                **common,
            )
        else:
            if not error.retryable:
                why = "Conveyor does not retry this kind of error."
            elif not retries_category:
                why = "This agent is set not to retry this kind of error."
            else:
                why = f"No attempts are left ({number} of {execution.max_attempts} used)."
            won = transition(
                execution,
                to=Status.FAILED,
                at=at,
                reason=f"Attempt {number} failed ({error.category}); {why}",
                event_data={"category": error.category},
                finished_at=at,
                duration=(at - execution.started_at) if execution.started_at else None,
                next_attempt_at=None,
                wait_reason=WaitReason.NONE,
                wait_until=None,
                error_message=f"{error.reason} {why} {info.what_to_do}",
                **common,
            )
        if won:
            lost = error.category == Category.WORKER_LOST
            closed = attempt_closed(
                outcome=ExecutionAttempt.Outcome.LOST if lost else ExecutionAttempt.Outcome.FAILED,
                at=at,
                category=error.category,
                message=error.reason,
                retry_delay=countdown,
            )
        else:
            countdown = None
            closed = attempt_closed(outcome=_lost_to(execution), at=at)
        _close_attempt(execution.pk, number, **closed)
        logs = list(logs)
        if won:
            logs.append(
                ExecutionLog(
                    execution_id=execution.pk,
                    attempt=number,
                    at=at,
                    level=ExecutionLog.Level.ERROR,
                    message=f"Attempt {number} failed: {error.reason}",
                    data={"category": error.category},
                )
            )
        ExecutionLog.objects.bulk_create(logs)
        if countdown is not None and publish_retry:
            publish_on_commit(execution, agent, countdown=countdown)
    logger.info(
        "attempt failed",
        extra={
            "action": "execution_retry_scheduled" if countdown is not None else "execution_failed",
            "execution_id": str(execution.uuid),
            "attempt": number,
            "category": error.category,
            "countdown": countdown,
        },
    )
    return countdown


def attempt_close_cancelled(
    *, execution: Execution, number: int, at: datetime, logs: list[ExecutionLog] | tuple = ()
) -> None:
    """The agent stopped because its execution was cancelled: close the attempt as such."""
    stopped = ExecutionLog(
        execution_id=execution.pk,
        attempt=number,
        at=at,
        level=ExecutionLog.Level.WARNING,
        message="Stopped: the execution was cancelled.",
    )
    with transaction.atomic():
        _close_attempt(
            execution.pk,
            number,
            **attempt_closed(
                outcome=ExecutionAttempt.Outcome.CANCELLED,
                at=at,
                message="Stopped after the execution was cancelled.",
            ),
        )
        ExecutionLog.objects.bulk_create([*logs, stopped])


def _lost_to(execution: Execution) -> str:
    """The attempt's outcome when our finishing compare-and-set lost (someone cancelled)."""
    execution.refresh_from_db(fields=["status"])
    if execution.status == Status.CANCELLED:
        return ExecutionAttempt.Outcome.CANCELLED
    return ExecutionAttempt.Outcome.LOST


def _close_attempt(execution_id: int, number: int, **fields: Any) -> int:
    # Guarded on finished_at: a forced cancel may have closed it already.
    return ExecutionAttempt.objects.filter(
        execution_id=execution_id, number=number, finished_at__isnull=True
    ).update(**fields)


def execution_cancel(
    *, execution: Execution, by: str = "", at: datetime | None = None, message: str = ""
) -> bool:
    """Cancel a queued, retrying or running execution. It never runs (again) afterwards.

    A running attempt is told through the row (``ctx.is_cancelled()``) and, if it has not
    stopped by itself within ``CONVEYOR_CANCEL_GRACE`` seconds, terminated by its worker; a
    running flow's steps are stopped (``executions.flows.flow_stop``). ``message`` is what its
    owner reads (default: "This execution was cancelled by <by>."). Raises ExecutionRefused
    when the execution has already finished.
    """
    at = at or timezone.now()
    who = f" by {by}" if by else ""
    for _ in range(5):  # the status may move under us (queued -> running): read again and retry
        if execution.is_terminal:
            raise ExecutionRefused(
                f"This execution has already finished ({execution.get_status_display().lower()})"
                " and cannot be cancelled.",
                code="already_finished",
            )
        was_running = execution.status == Status.RUNNING
        with transaction.atomic():
            won = transition(
                execution,
                to=Status.CANCELLED,
                at=at,
                reason=f"Cancelled{who}",
                finished_at=at,
                duration=(at - execution.started_at) if execution.started_at else None,
                next_attempt_at=None,
                wait_reason=WaitReason.NONE,
                wait_until=None,
                waits_on="",
                error_category=Category.CANCELLED,
                error_title=CATEGORIES[Category.CANCELLED].title,
                error_message=message or f"This execution was cancelled{who}.",
            )
            if won and was_running and getattr(execution.agent.kind_impl, "is_flow", False):
                from .flows import flow_stop

                # A flow's own attempt runs nothing: its steps are what must stop.
                flow_stop(flow=execution, at=at, why="the flow was cancelled")
                was_running = False
        if won:
            if was_running:
                # Named, like publish() above; the defaults bind this pass's values.
                def enforce_later(execution_id=execution.pk, attempt=execution.attempt):
                    _enforce_cancel_later(execution_id, attempt)

                transaction.on_commit(enforce_later, robust=True)
            logger.info(
                "execution cancelled",
                extra={"action": "execution_cancelled", "execution_id": str(execution.uuid)},
            )
            return True
        execution.refresh_from_db()
    raise ExecutionRefused("The execution kept changing; try again.", code="busy")


def _enforce_cancel_later(execution_id: int, attempt: int) -> None:
    from .tasks import enforce_cancel

    enforce_cancel.apply_async(
        args=[execution_id, attempt], countdown=settings.CONVEYOR_CANCEL_GRACE
    )


def execution_enforce_cancel(*, execution_id: int, attempt: int) -> bool:
    """Terminate a cancelled execution's attempt that did not stop by itself.

    Celery revokes the task with ``terminate=True`` (the worker kills the process running it)
    and the attempt is closed here. Returns whether anything had to be done.
    """
    from config.celery import app

    execution = Execution.objects.filter(pk=execution_id, status=Status.CANCELLED).first()
    if execution is None:
        return False
    at = timezone.now()
    closed = _close_attempt(
        execution_id,
        attempt,
        **attempt_closed(
            outcome=ExecutionAttempt.Outcome.CANCELLED,
            at=at,
            message=(
                f"Stopped by force: it did not stop by itself within "
                f"{settings.CONVEYOR_CANCEL_GRACE} s of the cancel."
            ),
        ),
    )
    if not closed:
        return False
    app.control.revoke(execution.celery_task_id, terminate=True, signal="SIGTERM")
    logger.warning(
        "running execution terminated after cancel",
        extra={"action": "execution_cancel_enforced", "execution_id": str(execution.uuid)},
    )
    return True


def execution_retry(
    *, execution: Execution, input: Any = _UNSET, by: str = "", at: datetime | None = None
) -> Execution:
    """Run a failed or cancelled execution again as a new execution (``retry_of`` set).

    The original is never changed. The input is the same unless a new one is given (checked by
    the agent's kind like any other). An execution is retried once: a second retry of the same
    one is refused with a pointer to the first (retry that one instead); the idempotency key
    ``retry:<uuid>`` makes two retries at once still create one.
    """
    if not execution.can_retry:
        raise ExecutionRefused(
            f"Only failed or cancelled executions can be retried; this one is "
            f"{execution.get_status_display().lower()}.",
            code="not_retryable",
        )
    key = f"retry:{execution.uuid}"
    earlier = execution.retried_as.order_by("created_at", "pk").first()
    if earlier is None:
        who = f" by {by}" if by else ""
        try:
            new = execution_request(
                agent=execution.agent,
                trigger=Execution.Trigger.RETRY,
                input=execution.input if input is _UNSET else input,
                idempotency_key=key,
                retry_of=execution,
                reason=f"Manual retry of {execution.uuid}{who}",
                at=at,
            )
        except ExecutionRefused as exc:
            if exc.code != "idempotency_key_reused":
                raise
            new = None  # another retry, with another input, won the race
        if new is not None and not new.is_replay:
            return new
        earlier = Execution.objects.get(agent_id=execution.agent_id, idempotency_key=key)
    raise ExecutionRefused(
        f"This execution was already retried as {earlier.uuid}: open that one to retry again.",
        code="already_retried",
        existing=earlier,
    )
