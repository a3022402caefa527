"""The verbs of executions. Views, API, admin actions, commands and tasks call these.

Every status change goes through :func:`transition`: a compare-and-set UPDATE on the status and
attempt number the caller saw, plus an ExecutionEvent in the same transaction. When another
process got there first the UPDATE changes no row and the caller learns it lost; nothing is
overwritten. Enqueueing happens only in ``transaction.on_commit``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent

from .errors import CATEGORIES, Category
from .models import Execution, ExecutionAttempt, ExecutionEvent

logger = logging.getLogger("conveyor.executions")

Status = Execution.Status
_UNSET: Any = object()


class ExecutionRefused(Exception):
    """The request does not fit the execution's or agent's current state (HTTP 409)."""

    code = "conflict"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
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
        ExecutionEvent.objects.create(
            execution_id=execution.pk,
            from_status=from_status,
            to_status=to,
            at=at,
            attempt=fields.get("attempt", execution.attempt),
            reason=reason,
            data=event_data or {},
        )
    execution.status = to
    for name, value in fields.items():
        setattr(execution, name, value)
    return True


def execution_create(
    *,
    agent: Agent,
    trigger: str,
    input: Any = None,
    idempotency_key: str | None = None,
    retry_of: Execution | None = None,
    parent: Execution | None = None,
    step_index: int | None = None,
    not_before: datetime | None = None,
    schedule=None,
    scheduled_for: datetime | None = None,
    reason: str = "",
    at: datetime | None = None,
) -> Execution:
    """Write a queued execution and hand it to a worker once the transaction commits.

    With an ``idempotency_key`` already used for this agent, the first execution is returned
    instead (its ``is_replay`` attribute is True) and nothing new is queued.
    """
    at = at or timezone.now()
    if agent.is_paused:
        raise ExecutionRefused(
            f"The agent “{agent.name}” is paused. Resume it to start new runs.", code="agent_paused"
        )
    if trigger not in Execution.Trigger.values:
        raise ValueError(f"Unknown trigger {trigger!r}.")
    if idempotency_key is not None:
        existing = Execution.objects.filter(agent=agent, idempotency_key=idempotency_key).first()
        if existing is not None:
            existing.is_replay = True
            return existing
    execution = Execution(
        agent=agent,
        owner_id=agent.owner_id,
        trigger=trigger,
        input=input,
        status=Status.QUEUED,
        max_attempts=agent.max_retries + 1,
        idempotency_key=idempotency_key,
        retry_of=retry_of,
        parent=parent,
        step_index=step_index,
        not_before=not_before,
        schedule=schedule,
        scheduled_for=scheduled_for,
        created_at=at,
        celery_task_id=str(uuid.uuid4()),
    )
    try:
        # A savepoint only when a duplicate key can make the insert fail inside a caller's
        # transaction (bulk creation in one transaction pays no extra round trips otherwise).
        with transaction.atomic(savepoint=idempotency_key is not None):
            execution.save(force_insert=True)
            ExecutionEvent.objects.create(
                execution=execution,
                from_status="",
                to_status=Status.QUEUED,
                at=at,
                reason=reason or _created_reason(trigger, retry_of),
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        # Another request with the same key won the race between our check and our insert.
        existing = Execution.objects.get(agent=agent, idempotency_key=idempotency_key)
        existing.is_replay = True
        return existing
    execution.is_replay = False
    if not_before is None or not_before <= at:
        _enqueue_on_commit(execution, agent)
    logger.debug(
        "execution created",
        extra={"action": "execution_created", "execution_id": str(execution.uuid)},
    )
    return execution


def _created_reason(trigger: str, retry_of: Execution | None) -> str:
    if retry_of is not None:
        return f"Retry of execution {retry_of.uuid}"
    return f"Started ({Execution.Trigger(trigger).label.lower()})"


def _enqueue_on_commit(execution: Execution, agent: Agent) -> None:
    # robust: a broker that is down at commit must not turn a saved execution into an error
    # page; the row stays queued and is published again later.
    execution_id, attempt, task_id = execution.pk, execution.attempt, execution.celery_task_id

    def publish():  # named: Django logs a robust callback's failure by its __qualname__
        enqueue(execution_id, agent, attempt=attempt, task_id=task_id)

    transaction.on_commit(publish, robust=True)


def enqueue(
    execution_id: int,
    agent: Agent,
    *,
    attempt: int,
    task_id: str | None = None,
    countdown: float | None = None,
) -> None:
    """Publish "run execution X" for its next attempt, with the agent's queue and limits.

    ``retries`` carries the number of attempts already made, so that the worker can tell a
    stale duplicate message from the one for the current attempt.
    """
    from .tasks import run_execution

    if task_id is None:
        task_id = (
            Execution.objects.filter(pk=execution_id)
            .values_list("celery_task_id", flat=True)
            .first()
        )
    run_execution.apply_async(
        args=[execution_id],
        task_id=task_id,
        queue=agent.queue,
        # The Redis transport serves lower numbers first; an agent's priority is "higher first".
        priority=9 - agent.priority,
        soft_time_limit=agent.timeout,
        time_limit=agent.timeout + settings.CONVEYOR_TIME_LIMIT_GRACE,
        retries=attempt,
        countdown=countdown,
    )


def execution_cancel(*, execution: Execution, by: str = "", at: datetime | None = None) -> bool:
    """Cancel a queued, retrying or running execution. It never runs (again) afterwards.

    A running attempt is told through the row (``ctx.is_cancelled()``) and, if it has not
    stopped by itself within ``CONVEYOR_CANCEL_GRACE`` seconds, terminated by its worker.
    Raises ExecutionRefused when the execution has already finished.
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
        won = transition(
            execution,
            to=Status.CANCELLED,
            at=at,
            reason=f"Cancelled{who}",
            finished_at=at,
            duration=(at - execution.started_at) if execution.started_at else None,
            next_attempt_at=None,
            error_category=Category.CANCELLED,
            error_title=CATEGORIES[Category.CANCELLED].title,
            error_message=f"This execution was cancelled{who}.",
        )
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
    closed = ExecutionAttempt.objects.filter(
        execution_id=execution_id, number=attempt, finished_at__isnull=True
    ).update(
        finished_at=at,
        outcome=ExecutionAttempt.Outcome.CANCELLED,
        error_category=Category.CANCELLED,
        error_message=(
            f"Stopped by force: it did not stop by itself within "
            f"{settings.CONVEYOR_CANCEL_GRACE} s of the cancel."
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


def execution_retry(*, execution: Execution, input: Any = _UNSET, by: str = "") -> Execution:
    """Run a failed or cancelled execution again as a new execution (``retry_of`` set).

    The original is never changed. The input is the same unless a new one is given.
    """
    if not execution.can_retry:
        raise ExecutionRefused(
            f"Only failed or cancelled executions can be retried; this one is "
            f"{execution.get_status_display().lower()}.",
            code="not_retryable",
        )
    who = f" by {by}" if by else ""
    return execution_create(
        agent=execution.agent,
        trigger=Execution.Trigger.RETRY,
        input=execution.input if input is _UNSET else input,
        retry_of=execution,
        reason=f"Manual retry of {execution.uuid}{who}",
    )
