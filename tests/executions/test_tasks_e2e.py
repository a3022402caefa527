"""End to end through a real worker process, the broker (Redis or RabbitMQ) and the database."""

import itertools
import json
import time

from django.conf import settings
from django.db import connection

from agents.services import agent_update
from config.celery import app
from executions.models import Execution, ExecutionAttempt
from executions.services import enqueue, execution_cancel, execution_request
from executions.tasks import run_execution
from tests.conftest import wait_for


def _gaps(execution):
    """Seconds between one attempt's end and the next one's start."""
    attempts = list(execution.attempts.order_by("number"))
    return [
        (later.started_at - earlier.finished_at).total_seconds()
        for earlier, later in itertools.pairwise(attempts)
    ]


def test_a_flaky_agent_succeeds_on_its_third_attempt(worker, make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=3, retry_backoff=1)
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 2})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded"
    assert execution.attempt == 3
    assert execution.result == {"succeeded_on_attempt": 3}
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "retrying",
        "running",
        "retrying",
        "running",
        "succeeded",
    ]
    attempts = list(execution.attempts.order_by("number"))
    assert [a.outcome for a in attempts] == ["failed", "failed", "succeeded"]
    # Planned waits double (1 s, 2 s); actual waits never undercut the plan and stay near it.
    assert [a.retry_delay for a in attempts] == [1, 2, None]
    gaps = _gaps(execution)
    assert gaps[1] > gaps[0]
    for gap, planned in zip(gaps, [1, 2], strict=True):
        assert planned - 0.05 <= gap <= planned + 5
    assert execution.duration is not None and execution.finished_at is not None
    assert execution.error_message == ""


def test_jittered_waits_stay_within_the_policy_ceiling(worker, make_agent):
    agent = make_agent(
        config={"function": "demo.flaky"}, max_retries=2, retry_backoff=1, retry_jitter=True
    )
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 2})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded"
    planned = [a.retry_delay for a in execution.attempts.order_by("number")][:2]
    assert 0 <= planned[0] <= 1 and 0 <= planned[1] <= 2
    for gap, wait in zip(_gaps(execution), planned, strict=True):
        assert wait - 0.05 <= gap <= wait + 5


def test_a_permanent_error_fails_at_once_without_retrying(worker, make_agent):
    agent = make_agent(config={"function": "demo.broken"}, max_retries=3)
    execution = execution_request(agent=agent, trigger="manual")

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "failed"
    assert execution.attempt == 1
    assert execution.error_category == "invalid_input"
    assert execution.error_title == "The input was not accepted"
    assert "does not exist" in execution.error_message
    assert "does not retry this kind of error" in execution.error_message
    assert "Traceback" in execution.error_detail
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "failed",
    ]
    assert execution.status_label == "Failed"


def test_an_exhausted_transient_error_ends_failed_after_max_retries_plus_one(worker, make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=2, retry_backoff=0)
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 10})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "failed"
    assert execution.attempt == agent.max_retries + 1 == 3
    assert execution.attempts.count() == 3
    assert execution.error_category == "upstream_error"
    assert "No attempts are left (3 of 3 used)" in execution.error_message
    assert execution.status_label == "Failed after 3 attempts"


def test_a_timeout_ends_failed_with_category_timeout(worker, make_agent):
    agent = make_agent(config={"function": "demo.slow"}, timeout=1, max_retries=0)
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 10, "steps": 10})

    execution = wait_for(execution, "succeeded", "failed", timeout=20)

    assert execution.status == "failed"
    assert execution.error_category == "timeout"
    assert execution.error_title == "The agent took too long"
    assert "time limit of 1 s" in execution.error_message
    attempt = execution.attempts.get()
    assert attempt.outcome == "failed" and attempt.error_category == "timeout"


def test_an_agent_that_ignores_its_time_limit_is_killed_and_fails_as_timed_out(worker, make_agent):
    agent = make_agent(config={"function": "demo.slow"}, timeout=1, max_retries=0)
    execution = execution_request(
        agent=agent, trigger="manual", input={"seconds": 30, "steps": 3, "cooperative": False}
    )

    execution = wait_for(execution, "succeeded", "failed", timeout=30)

    assert execution.status == "failed"
    assert execution.error_category == "timeout"
    assert "did not stop at the agent's time limit of 1 s and was killed" in (
        execution.error_message
    )
    assert execution.attempts.get().outcome == "failed"


def test_cancelling_a_running_agent_stops_it_and_it_never_runs_again(worker, make_agent):
    agent = make_agent(config={"function": "demo.slow"}, max_retries=3)
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 30, "steps": 60})
    execution = wait_for(execution, "running")

    execution_cancel(execution=execution, by="alice")

    deadline = time.monotonic() + 5
    attempt = execution.attempts.get()
    while attempt.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
        attempt.refresh_from_db()
    assert attempt.outcome == "cancelled"
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.error_message == "This execution was cancelled by alice."

    # A redelivered or re-sent message for the next attempt does nothing.
    enqueue(execution.pk, agent, attempt=execution.attempt, task_id=execution.celery_task_id)
    time.sleep(1.5)
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.attempts.count() == 1
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "cancelled",
    ]


def test_an_agent_that_ignores_the_cancel_is_terminated_by_its_worker(worker, make_agent):
    from config.celery import app

    agent = make_agent(config={"function": "demo.slow"})
    execution = execution_request(
        agent=agent, trigger="manual", input={"seconds": 30, "steps": 2, "cooperative": False}
    )
    execution = wait_for(execution, "running")

    execution_cancel(execution=execution, by="alice")

    # The attempt is closed by force after the grace period and the worker stops the task.
    attempt = execution.attempts.get()
    deadline = time.monotonic() + settings.CONVEYOR_CANCEL_GRACE + 10
    while attempt.finished_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
        attempt.refresh_from_db()
    assert attempt.outcome == "cancelled"
    assert attempt.error_message.startswith("Stopped by force")

    def still_active():
        active = app.control.inspect(destination=[worker.nodename], timeout=1).active() or {}
        return any(t["id"] == execution.celery_task_id for ts in active.values() for t in ts)

    deadline = time.monotonic() + 5
    while still_active() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not still_active()


def test_a_queued_execution_cancelled_before_a_worker_takes_it_never_runs(worker, make_agent):
    nobody_listens = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-nobody-listens"
    agent = make_agent(config={"function": "demo.echo"}, queue=nobody_listens)
    execution = execution_request(agent=agent, trigger="manual", input={"x": 1})
    execution_cancel(execution=execution)

    # Hand the message to the real queue now: the worker must leave it alone.
    enqueue(execution.pk, agent, attempt=0, task_id=execution.celery_task_id)
    run_execution.apply_async(
        args=[execution.pk], retries=0, queue=settings.CONVEYOR_EXECUTIONS_QUEUE
    )
    time.sleep(1.5)

    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.attempts.count() == 0


def test_delivering_the_same_task_message_twice_runs_the_agent_once(worker, make_agent):
    held = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-held"  # nobody consumes it
    agent = make_agent(config={"function": "demo.slow"}, queue=held)
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 1, "steps": 2})
    # The on-commit publish went to a queue nobody consumes; deliver the same message twice
    # to the worker's queue, as a broker redelivery would, both at once.
    for _ in range(2):
        run_execution.apply_async(
            args=[execution.pk],
            task_id=execution.celery_task_id,
            retries=0,
            queue=settings.CONVEYOR_EXECUTIONS_QUEUE,
        )

    execution = wait_for(execution, "succeeded", "failed")
    time.sleep(1)  # let the second delivery finish too

    assert execution.status == "succeeded"
    assert execution.attempts.count() == 1
    assert execution.logs.filter(message__startswith="Finished step").count() == 2
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "succeeded",
    ]


def test_secrets_never_reach_the_row_logs_events_message_or_repr(worker, make_agent):
    secret = "s3cr3t-value-never-shown"
    inspected = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-inspected"  # nobody consumes it
    agent = make_agent(config={"function": "demo.echo"}, queue=inspected)
    agent_update(agent=agent, secrets={"api_key": secret})
    # The caller puts the secret in the input (stored as given, it is theirs): whatever the
    # agent returns or logs of it is masked.
    execution = execution_request(agent=agent, trigger="manual", input={"token": secret})

    # The messages as the broker holds them (Redis or RabbitMQ): body, headers and properties.
    # The queue is this test's own; an interrupted earlier run may have left one there too.
    with app.connection_for_read() as broker:
        queue = app.amqp.queues[inspected](broker.default_channel)
        raws = []
        while (message := queue.get(no_ack=False)) is not None:
            body = message.body  # bytes from Redis, text from RabbitMQ
            text = body.decode() if isinstance(body, bytes) else body
            raws.append(text + json.dumps([message.headers, message.properties]))
            message.ack()  # taken off the queue
    ours = [raw for raw in raws if execution.celery_task_id in raw]
    assert len(ours) == 1
    assert f"[[{execution.pk}]" in ours[0]  # the message says "run execution X" ...
    assert not any(secret in raw for raw in raws)  # ... and nothing else of the agent

    enqueue(execution.pk, agent, attempt=0, task_id=execution.celery_task_id)
    with app.connection_for_write() as broker:  # that copy is for nobody: leave no message
        app.amqp.queues[inspected](broker.default_channel).purge()
    run_execution.apply_async(
        args=[execution.pk], retries=0, queue=settings.CONVEYOR_EXECUTIONS_QUEUE
    )
    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded"
    assert execution.result == {"token": "***"}
    recorded = json.dumps(
        [
            list(
                Execution.objects.filter(pk=execution.pk).values(
                    *[f.attname for f in Execution._meta.concrete_fields if f.name != "input"]
                )
            ),
            list(execution.logs.values()),
            list(execution.events.values()),
            list(ExecutionAttempt.objects.filter(execution=execution).values()),
        ],
        default=str,
    )
    assert secret not in recorded
    assert secret not in repr(agent) + repr(agent.secrets) + str(agent.secrets)
    assert secret not in repr(execution)
    # The secret is stored encrypted, not in clear text.
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM agents_agent WHERE id = %s", [agent.pk])
        (stored,) = cursor.fetchone()
    assert secret not in stored and stored
