"""Nothing committed is stranded, through a real worker, Redis and the database: executions
whose message never reached the broker are published again, and an attempt whose worker was
killed mid-run is reaped."""

import os
import signal
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from agents.services import agent_update
from executions.models import Execution
from executions.recovery import publish_due, reap_lost_attempts, republish_stranded
from executions.services import execution_request
from tests.conftest import wait_for


@contextmanager
def broker_unreachable():
    """Point this process's Celery app at a port where nothing listens, then back."""
    from config.celery import app

    saved = {
        key: app.conf[key]
        for key in (
            "broker_url",
            "broker_write_url",
            "task_publish_retry",
            "broker_connection_timeout",
        )
    }

    def reconnect():
        app.amqp._producer_pool = None
        app._pool = None

    dead = "redis://127.0.0.1:9/0"
    app.conf.update(
        broker_url=dead,
        broker_write_url=dead,
        task_publish_retry=False,
        broker_connection_timeout=0.5,
    )
    reconnect()
    try:
        yield
    finally:
        app.conf.update(saved)
        reconnect()


def test_runs_committed_while_the_broker_was_unreachable_are_published_later_and_run_once(
    worker, make_agent
):
    agent = make_agent()
    with broker_unreachable():
        # Autocommit: each publish happens on commit, fails, and is logged, not raised.
        executions = [
            execution_request(agent=agent, trigger="manual", input={"n": n}) for n in (1, 2)
        ]
    time.sleep(2)
    for execution in executions:
        execution.refresh_from_db()
        assert execution.status == "queued", "nothing was published, so nothing can have run"

    later = timezone.now() + timedelta(seconds=settings.CONVEYOR_REPUBLISH_AFTER)
    assert republish_stranded(at=later) == 2

    for execution in executions:
        wait_for(execution, "succeeded", "failed")
        assert execution.status == "succeeded"
        assert execution.attempts.count() == 1
    assert republish_stranded(at=later) == 0


def test_a_delayed_run_handed_over_while_the_broker_was_unreachable_is_sent_again(
    worker, make_agent
):
    now = timezone.now()
    execution = execution_request(
        agent=make_agent(), trigger="manual", not_before=now + timedelta(seconds=1)
    )
    due = now + timedelta(seconds=2)
    with broker_unreachable():
        # The stamp commits, the publish fails and is logged: the tick goes on.
        assert publish_due(at=due) == 1
    time.sleep(2)
    execution.refresh_from_db()
    assert (execution.status, execution.wait_reason, execution.published_at) == (
        "queued",
        "broker",
        due,
    )

    assert republish_stranded(at=due + timedelta(seconds=settings.CONVEYOR_REPUBLISH_AFTER)) == 1
    wait_for(execution, "succeeded", "failed")
    assert execution.status == "succeeded" and execution.attempts.count() == 1


def killed_mid_run(private_worker, make_agent, **agent_fields):
    """An execution of demo.slow whose private worker is killed with SIGKILL mid-run. The agent's
    timeout is five minutes: only the heartbeat can bring it back sooner."""
    doomed_queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-doomed"
    proc = private_worker(doomed_queue)
    agent = make_agent(
        config={"function": "demo.slow"}, queue=doomed_queue, timeout=300, **agent_fields
    )
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 3, "steps": 6})
    wait_for(execution, "running")
    deadline = time.monotonic() + 10
    while execution.progress == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        execution.refresh_from_db()
    assert execution.progress > 0, "the attempt should be under way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # The next attempt, if any, goes to the session's worker.
    agent_update(agent=agent, queue=settings.CONVEYOR_EXECUTIONS_QUEUE)
    time.sleep(1)
    execution.refresh_from_db()
    assert execution.status == "running", "nobody is left to finish it"
    return execution


def recovery_window():
    """How long after a kill the reaper must have acted: the heartbeat timeout, one more
    interval (the last stamp may be that old), a few dispatcher ticks, and slack for CI."""
    return settings.CONVEYOR_HEARTBEAT_TIMEOUT + settings.CONVEYOR_HEARTBEAT_INTERVAL + 10


def test_an_attempt_killed_with_its_worker_is_reaped_by_its_heartbeat_and_retried_elsewhere(
    private_worker, make_agent, beat
):
    beat()  # dispatcher ticks, run by the session's worker
    execution = killed_mid_run(private_worker, make_agent, max_retries=2, retry_backoff=1)
    killed_at = time.monotonic()

    wait_for(execution, "retrying", "succeeded", "failed", timeout=recovery_window())
    recovered_in = time.monotonic() - killed_at
    assert execution.error_category == "worker_lost"
    assert recovered_in < recovery_window()

    wait_for(execution, "succeeded", "failed", timeout=30)
    assert execution.status == "succeeded"
    assert [a.outcome for a in execution.attempts.order_by("number")] == ["lost", "succeeded"]
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "retrying",
        "running",
        "succeeded",
    ]


def test_an_attempt_killed_with_its_worker_and_no_retry_left_fails_as_worker_lost(
    private_worker, make_agent
):
    execution = killed_mid_run(private_worker, make_agent, max_retries=0)
    silent = execution.heartbeat_at + timedelta(seconds=settings.CONVEYOR_HEARTBEAT_TIMEOUT + 1)

    assert reap_lost_attempts(at=silent) == 1
    execution.refresh_from_db()
    assert execution.status == "failed"
    assert execution.error_category == "worker_lost"
    assert execution.error_title == "The worker running it stopped"
    assert execution.attempts.get().outcome == "lost"
    assert not Execution.objects.filter(status="running").exists()


def test_a_live_attempt_that_reports_nothing_for_longer_than_the_timeout_is_not_reaped(
    worker, make_agent, beat
):
    beat()
    # One step: the agent sleeps for longer than the heartbeat timeout without a progress
    # report or a log line. Only the worker's heartbeat thread says it is alive.
    seconds = settings.CONVEYOR_HEARTBEAT_TIMEOUT * 2
    agent = make_agent(config={"function": "demo.slow"}, timeout=300, max_retries=0)
    execution = execution_request(
        agent=agent, trigger="manual", input={"seconds": seconds, "steps": 1}
    )
    wait_for(execution, "succeeded", "failed", timeout=seconds + 30)
    assert execution.status == "succeeded", execution.error_detail
    assert execution.attempts.count() == 1
