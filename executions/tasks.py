"""Celery tasks. Thin: they take ids, call the runner or a service, and own the retry policy."""

import logging

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, transaction

from . import bulk, dispatch, flows, retention, runner, services

logger = logging.getLogger("conveyor.tasks")


class ExecutionFailed(Exception):
    """The execution ended failed. Raised so that the task's state (in Flower, in the worker's
    log) says what the execution's row says; the row already holds everything."""


class RunExecutionTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Celery calls this in the worker's main process when it killed an attempt at its hard
        # time limit (the agent ignored the soft one); the attempt is finished from there.
        if isinstance(exc, TimeLimitExceeded) and args:
            # The main process's connection is used rarely and may predate a database restart.
            close_old_connections()
            runner.handle_hard_time_limit(execution_id=args[0])


@shared_task(
    bind=True,
    base=RunExecutionTask,
    name="executions.run_execution",
    ignore_result=True,
    # An expected outcome, not a bug: logged on one line, without a traceback.
    throws=(ExecutionFailed,),
)
def run_execution(self, execution_id: int, db_waits: int = 0, agent: int | None = None) -> None:
    """Run the next attempt of execution ``execution_id``.

    ``agent``: the agent's id (messages from older releases have none): a worker that keeps the
    agent claims without reading it again (``services.execution_claim``).

    ``self.request.retries`` is the number of attempts made before this message was sent; the
    runner claims the execution only if the row agrees, so duplicate and stale messages do
    nothing. A failed attempt that the agent's policy retries comes back as
    ``self.retry(countdown=..., max_retries=...)``: Celery re-publishes the same task id with
    the same time limits and the retry count plus one.

    When the database does not answer (it is restarting, or the connection died with it), the
    same message is sent again after 1, 2, 4 ... 30 seconds (``db_waits`` counts the waits), up to
    ``DB_WAIT_LIMIT`` times; after that the row, still waiting, is the dispatcher's to send
    again. If the attempt had been claimed before the database went away, the copy finds it
    claimed and does nothing, and the reaper takes the attempt back when its heartbeat stops.
    """
    try:
        decision = runner.run_attempt(
            execution_id=execution_id,
            expected_attempt=self.request.retries,
            worker=self.request.hostname or "",
            agent_id=agent,
        )
    except (OperationalError, InterfaceError) as exc:
        resend_while_database_away(self, exc, execution_id=execution_id, db_waits=db_waits)
        return
    if decision.retry_in is not None:
        raise self.retry(countdown=decision.retry_in, max_retries=decision.max_retries)
    if decision.failed is not None:
        raise ExecutionFailed(decision.failed)


# Times a run's message is sent again while the database does not answer: waits of 1, 2, 4, 8,
# 16, then 30 s, about 8 minutes in all.
DB_WAIT_LIMIT = 20
DB_WAIT_MAX = 30


def resend_while_database_away(task: Task, exc: Exception, *, execution_id: int, db_waits: int):
    if db_waits >= DB_WAIT_LIMIT:
        logger.error(
            "database unreachable: run left to the dispatcher",
            extra={"action": "run_database_unreachable", "execution_pk": execution_id},
        )
        raise exc
    countdown = min(2**db_waits, DB_WAIT_MAX)
    logger.warning(
        "database unreachable: run sent again in %s s",
        countdown,
        extra={
            "action": "run_database_retry",
            "execution_pk": execution_id,
            "error": f"{type(exc).__name__}: {exc}".strip()[:300],
        },
    )
    # The same message (task id, attempt count, time limits, queue) with one more wait counted.
    task.signature_from_request(
        kwargs={**(task.request.kwargs or {}), "db_waits": db_waits + 1}, countdown=countdown
    ).apply_async()


@shared_task(bind=True, name="executions.start_flow", ignore_result=True)
def start_flow(self, execution_id: int, db_waits: int = 0) -> None:
    """Start flow ``execution_id``: claim it, lay out its steps and start the first
    (``executions.flows.flow_start``). Nothing runs here for long: the steps are executions of
    their own. A duplicate message claims nothing."""
    try:
        flows.flow_start(
            execution_id=execution_id,
            expected_attempt=self.request.retries,
            worker=self.request.hostname or "",
        )
    except (OperationalError, InterfaceError) as exc:
        resend_while_database_away(self, exc, execution_id=execution_id, db_waits=db_waits)


@shared_task(
    name="executions.advance_flow",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def advance_flow(flow_id: int) -> None:
    """A step of flow ``flow_id`` ended: start what comes next (``executions.flows``). If this
    message is lost or runs out of retries, the dispatcher's recovery pass advances the flow."""
    flows.flow_advance(flow_id=flow_id)


@shared_task(
    name="executions.enforce_cancel",
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def enforce_cancel(execution_id: int, attempt: int) -> bool:
    """Terminate a cancelled execution's attempt that did not stop by itself in time."""
    return services.execution_enforce_cancel(execution_id=execution_id, attempt=attempt)


@shared_task(
    name="executions.dispatch",
    ignore_result=True,
    # Every few seconds: its events would bury the agent runs in Flower's task list.
    send_events=False,
    # A tick that waited longer than one interval is stale: the next one does its work.
    expires=settings.CONVEYOR_DISPATCH_INTERVAL,
)
def dispatch_tick() -> None:
    """Start due scheduled slots, publish due delayed runs, re-publish stranded executions and
    reap attempts whose worker died (``executions.dispatch``). Safe to run several at once."""
    dispatch.tick()


# Seconds between a retention task that ran out of time and the next one: the dispatcher's ticks
# that waited behind it on the maintenance worker go first.
RETENTION_PAUSE = 5


@shared_task(name="executions.retention", ignore_result=True)
def apply_retention() -> None:
    """Delete the finished executions past their retention, with everything that belongs to
    them, and old Celery results, in small batches (``executions.retention``), for at most
    ``CONVEYOR_RETENTION_MAX_SECONDS``; while some are left, send itself again. Sent daily by
    beat (``conveyor-retention``). Two at once do no harm: the second finds gone what the
    first deleted."""
    report = retention.retention_run(max_seconds=settings.CONVEYOR_RETENTION_MAX_SECONDS)
    if not report.complete:

        def go_on():
            apply_retention.apply_async(
                queue=settings.CONVEYOR_MAINTENANCE_QUEUE, countdown=RETENTION_PAUSE
            )

        transaction.on_commit(go_on)


@shared_task(
    name="executions.bulk_action",
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
)
def run_bulk_action(bulk_id: int) -> None:
    """Go on with bulk action ``bulk_id`` (``executions.bulk``) for a few seconds; while some
    executions are left, send itself again, behind whatever waits on the maintenance queue. A
    copy of a finished action does nothing. An unexpected error stops the action with its
    message (what its batches did stays done); a lost message is sent again by the dispatcher."""
    try:
        over = bulk.bulk_action_run(bulk_id=bulk_id)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        error = (
            f"Stopped by an unexpected error ({type(exc).__name__}); what was done until then "
            "stays done. Operators find the details in the maintenance worker's log."
        )
        bulk.bulk_action_fail(bulk_id=bulk_id, error=error)
        logger.exception(
            "bulk action failed", extra={"action": "bulk_action_failed", "bulk_action_pk": bulk_id}
        )
        raise
    if not over:

        def go_on():
            run_bulk_action.apply_async(args=[bulk_id], queue=settings.CONVEYOR_MAINTENANCE_QUEUE)

        transaction.on_commit(go_on)
