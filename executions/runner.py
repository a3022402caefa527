"""One attempt of one execution, as a worker runs it.

``run_attempt`` is what the Celery task calls:

1. **Claim**: in one transaction, read the execution with its agent, check it is waiting for
   exactly this attempt, compare-and-set it to running and open an ExecutionAttempt. A duplicate
   or stale message, or an execution that is finished or cancelled, claims nothing and the
   message is simply acknowledged.
2. **Run** the agent's kind with an :class:`ExecutionContext`.
3. **Finish** in one transaction: succeeded (result, duration), retrying (the wait computed from
   the agent's policy, returned so the task can ``retry(countdown=...)``) or failed, with the
   attempt closed and the buffered logs written. If the execution was cancelled meanwhile, the
   compare-and-set loses and the attempt is closed as cancelled instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.kinds import get_kind
from agents.kinds.base import CancelledError, ConfigurationError
from agents.models import Agent

from . import fastpath
from .errors import CATEGORIES, Category, ClassifiedError, classify
from .humanize import seconds_in_words
from .models import Execution, ExecutionAttempt, ExecutionLog
from .services import enqueue, transition

logger = logging.getLogger("conveyor.runner")
Status = Execution.Status

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


@dataclass(frozen=True)
class Decision:
    """What the task does after an attempt: nothing, or retry after ``retry_in`` seconds."""

    retry_in: int | None = None
    max_retries: int | None = None


NOTHING = Decision()


def run_attempt(*, execution_id: int, expected_attempt: int, worker: str = "") -> Decision:
    at = timezone.now()
    claimed = claim(
        execution_id=execution_id, expected_attempt=expected_attempt, worker=worker, at=at
    )
    if claimed is None:
        return NOTHING
    execution, attempt = claimed
    agent = execution.agent
    ctx = ExecutionContext(
        execution=execution, agent=agent, deadline=at + timedelta(seconds=agent.timeout)
    )
    try:
        kind = get_kind(agent.kind)
        if kind is None:
            raise ConfigurationError(f"This agent's kind “{agent.kind}” does not exist.")
        result = kind.run(ctx, execution.input)
        result = _json_safe_result(result)
    except Exception as exc:
        error = classify(exc, timeout=agent.timeout)
        if isinstance(exc, CancelledError) or ctx.is_cancelled(force=True):
            _close_cancelled(execution, attempt, ctx)
            return NOTHING
        return _finish_failure(execution, agent, attempt, ctx, ctx.scrub_error(error))
    _finish_success(execution, attempt, ctx, ctx.scrub_json(result))
    return NOTHING


def claim(*, execution_id: int, expected_attempt: int, worker: str, at: datetime):
    """Compare-and-set the execution to running for attempt ``expected_attempt + 1``."""
    if fastpath.enabled():
        claimed = fastpath.claim(
            execution_id=execution_id, expected_attempt=expected_attempt, worker=worker[:200], at=at
        )
        if claimed is None:
            logger.info(
                "execution not claimable (missing, duplicate, stale or finished message)",
                extra={"action": "execution_claim_skipped", "execution_pk": execution_id},
            )
        return claimed
    with transaction.atomic():
        execution = Execution.objects.select_related("agent").filter(pk=execution_id).first()
        if execution is None:
            logger.info(
                "no such execution",
                extra={"action": "execution_missing", "execution_pk": execution_id},
            )
            return None
        if execution.status not in (Status.QUEUED, Status.RETRYING) or (
            execution.attempt != expected_attempt
        ):
            logger.info(
                "execution not claimable (duplicate, stale or finished message)",
                extra={
                    "action": "execution_claim_skipped",
                    "execution_id": str(execution.uuid),
                    "status": execution.status,
                },
            )
            return None
        number = execution.attempt + 1
        won = transition(
            execution,
            to=Status.RUNNING,
            at=at,
            reason=f"Attempt {number} of {execution.max_attempts} started",
            attempt=number,
            started_at=execution.started_at or at,
            heartbeat_at=at,
            next_attempt_at=None,
            progress=0,
            progress_message="",
        )
        if not won:
            return None
        attempt = ExecutionAttempt.objects.create(
            execution=execution, number=number, started_at=at, worker=worker[:200]
        )
    return execution, attempt


def _finish_success(
    execution: Execution, attempt: ExecutionAttempt, ctx: ExecutionContext, result: Any
) -> None:
    at = timezone.now()
    if fastpath.enabled():
        won = fastpath.finish_success(
            execution=execution, attempt=attempt, logs=ctx.pending_logs, result=result, at=at
        )
        if won:
            ctx.pending_logs.clear()
            execution.status = Status.SUCCEEDED
            return
        # Lost the compare-and-set (a cancel came first): nothing was written; record it below.
    with transaction.atomic():
        won = transition(
            execution,
            to=Status.SUCCEEDED,
            at=at,
            reason=f"Attempt {attempt.number} succeeded",
            result=result,
            progress=100,
            finished_at=at,
            duration=at - execution.started_at,
            heartbeat_at=None,
            error_category="",
            error_title="",
            error_message="",
            error_detail="",
        )
        outcome = ExecutionAttempt.Outcome.SUCCEEDED if won else _lost_to(execution)
        _close_attempt(attempt, at, outcome)
        ctx.flush()


def _finish_failure(
    execution: Execution,
    agent: Agent,
    attempt: ExecutionAttempt,
    ctx: ExecutionContext,
    error: ClassifiedError,
) -> Decision:
    at = timezone.now()
    policy = agent.retry_policy
    info = CATEGORIES[error.category]
    number = attempt.number
    will_retry = (
        policy.retries(category=error.category, retryable=error.retryable)
        and number < execution.max_attempts
    )
    common = {
        "error_category": error.category,
        "error_title": info.title,
        "error_detail": error.detail,
        "heartbeat_at": None,
    }
    ctx.log("error", f"Attempt {number} failed: {error.reason}", category=error.category)
    with transaction.atomic():
        if will_retry:
            countdown = policy.countdown(attempt=number, retry_after=error.retry_after)
            message = (
                f"{error.reason} Conveyor will try again after a {seconds_in_words(countdown)} "
                f"wait (attempt {number + 1} of {execution.max_attempts})."
            )
            won = transition(
                execution,
                to=Status.RETRYING,
                at=at,
                reason=f"Attempt {number} failed ({error.category}); retry in {countdown} s",
                event_data={"countdown": countdown, "category": error.category},
                next_attempt_at=at + timedelta(seconds=countdown),
                error_message=message,
                **common,
            )
        else:
            countdown = None
            if not error.retryable or error.category not in policy.retry_on:
                why = "Conveyor does not retry this kind of error."
            else:
                why = f"No attempts are left ({number} of {execution.max_attempts} used)."
            message = f"{error.reason} {why} {info.what_to_do}"
            won = transition(
                execution,
                to=Status.FAILED,
                at=at,
                reason=f"Attempt {number} failed ({error.category}); {why}",
                event_data={"category": error.category},
                finished_at=at,
                duration=at - execution.started_at,
                next_attempt_at=None,
                error_message=message,
                **common,
            )
        if won:
            _close_attempt(
                attempt, at, ExecutionAttempt.Outcome.FAILED, error=error, retry_delay=countdown
            )
        else:
            _close_attempt(attempt, at, _lost_to(execution))
            countdown = None
        ctx.flush()
    logger.info(
        "attempt failed",
        extra={
            "action": "execution_retry_scheduled" if countdown is not None else "execution_failed",
            "execution_id": str(execution.uuid),
            "category": error.category,
            "countdown": countdown,
        },
    )
    if countdown is None:
        return NOTHING
    return Decision(retry_in=countdown, max_retries=execution.max_attempts - 1)


def _close_cancelled(
    execution: Execution, attempt: ExecutionAttempt, ctx: ExecutionContext
) -> None:
    at = timezone.now()
    ctx.log("warning", "Stopped: the execution was cancelled.")
    with transaction.atomic():
        _close_attempt(
            attempt,
            at,
            ExecutionAttempt.Outcome.CANCELLED,
            message="Stopped after the execution was cancelled.",
        )
        ctx.flush()


def _lost_to(execution: Execution) -> str:
    """The attempt's outcome when our finishing compare-and-set lost (someone cancelled)."""
    execution.refresh_from_db(fields=["status"])
    if execution.status == Status.CANCELLED:
        return ExecutionAttempt.Outcome.CANCELLED
    return ExecutionAttempt.Outcome.LOST


def _close_attempt(
    attempt: ExecutionAttempt,
    at: datetime,
    outcome: str,
    *,
    error: ClassifiedError | None = None,
    retry_delay: float | None = None,
    message: str = "",
) -> None:
    # Guarded on finished_at: a forced cancel may have closed it already.
    ExecutionAttempt.objects.filter(pk=attempt.pk, finished_at__isnull=True).update(
        finished_at=at,
        outcome=outcome,
        error_category=error.category
        if error
        else (Category.CANCELLED if outcome == ExecutionAttempt.Outcome.CANCELLED else ""),
        error_message=error.reason if error else message,
        retry_delay=retry_delay,
    )


def _json_safe_result(result: Any) -> Any:
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The agent returned a result that is not JSON: {exc}") from exc
    return result


def handle_hard_time_limit(*, execution_id: int) -> Decision:
    """The worker killed an attempt at its hard time limit (it ignored the soft one).

    Runs in the worker's main process (Celery calls the task's ``on_failure`` there), so the
    attempt is finished from the row alone and a retry is published as a fresh message.
    """
    # Only the killed message could have claimed the attempt now running.
    execution = (
        Execution.objects.select_related("agent")
        .filter(pk=execution_id, status=Status.RUNNING)
        .first()
    )
    if execution is None:
        return NOTHING
    agent = execution.agent
    attempt = execution.attempts.filter(number=execution.attempt).first()
    if attempt is None:
        return NOTHING
    error = ClassifiedError(
        Category.TIMEOUT,
        True,
        f"The attempt did not stop at the agent's time limit of {agent.timeout} s and was killed.",
        "TimeLimitExceeded (hard time limit)",
    )
    ctx = ExecutionContext(execution=execution, agent=agent, deadline=timezone.now())
    decision = _finish_failure(execution, agent, attempt, ctx, error)
    if decision.retry_in is not None:
        enqueue(
            execution.pk,
            agent,
            attempt=execution.attempt,
            task_id=execution.celery_task_id,
            countdown=decision.retry_in,
        )
    return NOTHING


class ExecutionContext:
    """The RunContext a kind receives (see ``agents.kinds.base.RunContext``).

    Writes are throttled: progress at most every ``CONVEYOR_PROGRESS_INTERVAL`` seconds, logs
    buffered and written in bulk at most every ``CONVEYOR_LOG_FLUSH_INTERVAL`` seconds (and at
    the end of the attempt), the cancel flag read at most every
    ``CONVEYOR_CANCEL_CHECK_INTERVAL`` seconds.
    """

    def __init__(self, *, execution: Execution, agent: Agent, deadline: datetime):
        self._pk = execution.pk
        self.execution_id = str(execution.uuid)
        self.attempt = execution.attempt
        self.max_attempts = execution.max_attempts
        self.deadline = deadline
        self.secrets = agent.secrets
        self.config = agent.config
        self._secret_values = sorted(
            (v for v in self.secrets.values() if len(v) >= 4), key=len, reverse=True
        )
        self._logs: list[ExecutionLog] = []
        self._last_flush = time.monotonic()
        self._last_progress = float("-inf")
        self._last_cancel_check = float("-inf")
        self._cancelled = False

    # -- for kinds ---------------------------------------------------------------------------
    def log(self, level: str, message: str, **data: Any) -> None:
        level = level.lower() if level.lower() in _LEVELS else "info"
        message = self.scrub(str(message))
        data = self.scrub_json(_jsonable(data))
        self._logs.append(
            ExecutionLog(
                execution_id=self._pk,
                attempt=self.attempt,
                at=timezone.now(),
                level=level,
                message=message,
                data=data,
            )
        )
        logger.log(
            _LEVELS[level],
            message,
            extra={"action": "agent_log", "execution_id": self.execution_id},
        )
        if (
            time.monotonic() - self._last_flush >= settings.CONVEYOR_LOG_FLUSH_INTERVAL
            or len(self._logs) >= 200
        ):
            self.flush()

    def progress(self, percent: float, message: str = "") -> None:
        now = time.monotonic()
        percent = max(0, min(100, int(percent)))
        if now - self._last_progress < settings.CONVEYOR_PROGRESS_INTERVAL and percent < 100:
            return
        self._last_progress = now
        updated = Execution.objects.filter(
            pk=self._pk, status=Status.RUNNING, attempt=self.attempt
        ).update(
            progress=percent,
            progress_message=self.scrub(str(message))[:200],
            heartbeat_at=timezone.now(),
        )
        if not updated:
            # Cancelled (or otherwise moved on) under us: is_cancelled() will say so.
            self._last_cancel_check = float("-inf")
        if self._logs:
            self.flush()

    def is_cancelled(self, *, force: bool = False) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if force or now - self._last_cancel_check >= settings.CONVEYOR_CANCEL_CHECK_INTERVAL:
            self._last_cancel_check = now
            status = Execution.objects.filter(pk=self._pk).values_list("status", flat=True)
            self._cancelled = status.first() in (Status.CANCELLED, None)
        return self._cancelled

    # -- for the runner ----------------------------------------------------------------------
    @property
    def pending_logs(self) -> list[ExecutionLog]:
        """Logs written by the agent and not yet saved."""
        return self._logs

    def flush(self) -> None:
        if self._logs:
            ExecutionLog.objects.bulk_create(self._logs)
            self._logs = []
        self._last_flush = time.monotonic()

    def scrub(self, text: str) -> str:
        """Replace any secret value that found its way into ``text`` with ***."""
        for value in self._secret_values:
            if value in text:
                text = text.replace(value, "***")
        return text

    def scrub_json(self, value: Any) -> Any:
        """``scrub`` applied to every string (keys too) inside a JSON value."""
        if not self._secret_values:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_json(item) for item in value]
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        return value

    def scrub_error(self, error: ClassifiedError) -> ClassifiedError:
        if not self._secret_values:
            return error
        return ClassifiedError(
            error.category,
            error.retryable,
            self.scrub(error.reason),
            self.scrub(error.detail),
            error.retry_after,
        )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, default=str))
