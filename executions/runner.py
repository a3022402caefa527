"""One attempt of one execution, as a worker runs it.

``run_attempt`` is what the Celery task calls:

1. **Claim** (``services.execution_claim``): compare-and-set the execution to running for
   exactly this attempt and open an ExecutionAttempt. A duplicate or stale message, or an
   execution that is finished or cancelled, claims nothing and the message is simply
   acknowledged.
2. **Run** the agent's kind with an :class:`ExecutionContext`.
3. **Finish** through the attempt services: ``attempt_succeed`` (result, duration),
   ``attempt_fail`` (retrying with the wait from the agent's policy, returned so the task can
   ``retry(countdown=...)``, or failed) or ``attempt_close_cancelled``; the buffered logs are
   written with it. If the execution was cancelled meanwhile, the compare-and-set loses and the
   attempt is closed as cancelled instead.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from django.conf import settings
from django.utils import timezone

from agents.kinds import get_kind
from agents.kinds.base import CancelledError, ConfigurationError
from agents.models import Agent
from agents.secrets import Scrubber
from common import instances

from .errors import Category, ClassifiedError, classify
from .heartbeat import heartbeat
from .models import Execution, ExecutionLog
from .services import (
    attempt_close_cancelled,
    attempt_fail,
    attempt_succeed,
    execution_claim,
    retry_message_lost,
)

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
    """What the task does after an attempt: nothing, retry after ``retry_in`` seconds, or
    report the execution's final failure (``failed``: what its owner reads)."""

    retry_in: int | None = None
    max_retries: int | None = None
    failed: str | None = None


NOTHING = Decision()


def run_attempt(
    *, execution_id: int, expected_attempt: int, worker: str = "", agent_id: int | None = None
) -> Decision:
    at = timezone.now()
    claimed = execution_claim(
        execution_id=execution_id,
        expected_attempt=expected_attempt,
        worker=worker,
        at=at,
        agent_id=agent_id,
    )
    if claimed is None:
        lost = retry_message_lost(
            execution_id=execution_id, expected_attempt=expected_attempt, at=at
        )
        if lost is not None:
            countdown, max_attempts = lost
            return Decision(retry_in=countdown, max_retries=max_attempts - 1)
        return NOTHING
    execution, attempt = claimed
    agent = execution.agent
    if getattr(agent.kind_impl, "is_flow", False):
        # A flow's message is executions.start_flow's; one sent to this task (by an older
        # release) starts it the same way.
        from .flows import flow_begin

        flow_begin(flow=execution, at=at)
        return NOTHING
    ctx = ExecutionContext(
        execution=execution, agent=agent, deadline=at + timedelta(seconds=agent.timeout)
    )
    try:
        kind = get_kind(agent.kind)
        if kind is None:
            raise ConfigurationError(f"This agent's kind “{agent.kind}” does not exist.")
        with heartbeat.beating(execution_id=execution.pk, attempt=attempt.number):
            result = _json_safe_result(kind.run(ctx, execution.input))
    except Exception as exc:
        if isinstance(exc, CancelledError) or ctx.is_cancelled(force=True):
            attempt_close_cancelled(
                execution=execution, number=attempt.number, at=timezone.now(), logs=ctx.take_logs()
            )
            return NOTHING
        error = ctx.scrub_error(classify(exc, timeout=agent.timeout))
        countdown = attempt_fail(
            execution=execution,
            number=attempt.number,
            error=error,
            at=timezone.now(),
            logs=ctx.take_logs(),
        )
        if countdown is not None:
            return Decision(retry_in=countdown, max_retries=execution.max_attempts - 1)
        if execution.status == Status.FAILED:
            return Decision(failed=f"{execution.error_title}: {execution.error_message}")
        return NOTHING
    attempt_succeed(
        execution=execution,
        attempt=attempt,
        result=ctx.scrub_json(result),
        at=timezone.now(),
        logs=ctx.take_logs(),
    )
    return NOTHING


def _json_safe_result(result: Any) -> Any:
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"The agent returned a result that is not JSON: {exc}") from exc
    return result


def handle_hard_time_limit(*, execution_id: int) -> None:
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
        return
    timeout = execution.agent.timeout
    attempt_fail(
        execution=execution,
        number=execution.attempt,
        error=ClassifiedError(
            Category.TIMEOUT,
            True,
            f"The attempt did not stop at the agent's time limit of {timeout} s and was killed.",
            "TimeLimitExceeded (hard time limit)",
        ),
        at=timezone.now(),
        publish_retry=True,
    )


class ExecutionContext:
    """The RunContext a kind receives (see ``agents.kinds.base.RunContext``).

    Writes are throttled: progress at most every ``CONVEYOR_PROGRESS_INTERVAL`` seconds, logs
    buffered and written in bulk at most every ``CONVEYOR_LOG_FLUSH_INTERVAL`` seconds (and at
    the end of the attempt), the cancel flag read at most every
    ``CONVEYOR_CANCEL_CHECK_INTERVAL`` seconds.

    ``log`` keeps only the lines at or above the agent's ``log_level`` (the others still reach
    the worker's own log, under its LOG_LEVEL); the lines Conveyor itself writes about the run
    (a failed attempt, a cancel, a saved file) are kept whatever the level. ``save_artifact``
    stores a file at once (``artifacts.services.artifact_save``).
    """

    def __init__(self, *, execution: Execution, agent: Agent, deadline: datetime):
        self._execution = execution
        self._pk = execution.pk
        self.execution_id = str(execution.uuid)
        # From the execution alone, so every attempt (and only this execution) sees the same.
        self.idempotency_key = f"conveyor-{execution.uuid}"
        self.attempt = execution.attempt
        self.max_attempts = execution.max_attempts
        self.deadline = deadline
        self.secrets = agent.secrets
        self.config = agent.config
        # What an earlier attempt saved with checkpoint() (None: start from the beginning).
        self.last_checkpoint = execution.checkpoint
        # The agent's secret values, masked with *** wherever the agent writes (agents.secrets).
        self._scrubber = Scrubber(self.secrets.values())
        self._logs: list[ExecutionLog] = []
        self._log_level = _LEVELS.get(agent.log_level, logging.DEBUG)
        self._last_flush = time.monotonic()
        self._last_progress = float("-inf")
        self._last_cancel_check = float("-inf")
        self._cancelled = False

    # -- for kinds ---------------------------------------------------------------------------
    def log(self, level: str, message: str, **data: Any) -> None:
        level = str(level).lower()
        level = level if level in _LEVELS else "info"
        kept = _LEVELS[level] >= self._log_level
        if not kept and not logger.isEnabledFor(_LEVELS[level]):
            return
        message = self.scrub(str(message))
        logger.log(
            _LEVELS[level],
            message,
            extra={"action": "agent_log", "execution_id": self.execution_id},
        )
        if not kept:  # below the agent's log level: not stored
            return
        self._append_log(level, message, self.scrub_json(_jsonable(data)))

    def save_artifact(
        self, name: str, data: bytes | str | BinaryIO, content_type: str | None = None
    ) -> None:
        # Imported here: the artifacts app builds on executions' models.
        from artifacts.services import artifact_save, human_size

        artifact = artifact_save(
            execution=self._execution,
            attempt=self.attempt,
            name=self.scrub(name) if isinstance(name, str) else name,
            data=data,
            content_type=content_type,
            mask=self._scrubber.values,
            at=timezone.now(),
        )
        # Conveyor's own line about the run: kept whatever the agent's log level.
        self._append_log(
            "info",
            f"Saved the file “{artifact.name}” ({human_size(artifact.size)}).",
            {"file": artifact.name, "bytes": artifact.size, "content_type": artifact.content_type},
        )

    def _append_log(self, level: str, message: str, data: dict[str, Any]) -> None:
        self._logs.append(
            instances.new(
                ExecutionLog,
                execution_id=self._pk,
                attempt=self.attempt,
                at=timezone.now(),
                level=level,
                message=message,
                data=data,
            )
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

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (JSON, at most ``CONVEYOR_CHECKPOINT_MAX_BYTES``) so that the next
        attempt of this execution, if there is one, starts from it (``last_checkpoint``).
        Written at once: an attempt killed right after still leaves it."""
        try:
            encoded = json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"A checkpoint must be JSON: {exc}") from exc
        size, most = len(encoded.encode()), settings.CONVEYOR_CHECKPOINT_MAX_BYTES
        if size > most:
            raise ValueError(
                f"A checkpoint of {size} bytes is larger than the {most} bytes allowed: save "
                "where the work stands (a position, an id), not the work itself."
            )
        now = timezone.now()
        saved = Execution.objects.filter(
            pk=self._pk, status=Status.RUNNING, attempt=self.attempt
        ).update(checkpoint=state, checkpoint_at=now, heartbeat_at=now)
        if not saved:
            self._last_cancel_check = float("-inf")  # moved on under us: is_cancelled() says
        self.last_checkpoint = state

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
    def take_logs(self) -> list[ExecutionLog]:
        """The logs written by the agent and not yet saved; the runner saves them with the
        attempt's final step."""
        logs, self._logs = self._logs, []
        return logs

    def flush(self) -> None:
        if self._logs:
            ExecutionLog.objects.bulk_create(self._logs)
            self._logs = []
        self._last_flush = time.monotonic()

    def scrub(self, text: str) -> str:
        """Replace any secret value that found its way into ``text`` with ***."""
        return self._scrubber.text(text)

    def scrub_json(self, value: Any) -> Any:
        """``scrub`` applied to every string (keys too) inside a JSON value."""
        return self._scrubber.json(value)

    def scrub_error(self, error: ClassifiedError) -> ClassifiedError:
        if not self._scrubber:
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
