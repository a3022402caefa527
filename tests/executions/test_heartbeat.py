"""The heartbeat of a running attempt (executions/heartbeat.py): which attempts are due a stamp,
which rows take it, and the thread that writes it while the agent runs."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from executions.heartbeat import Heartbeat


@pytest.fixture
def interval(settings):
    settings.CONVEYOR_HEARTBEAT_INTERVAL = 1.0
    settings.CONVEYOR_HEARTBEAT_TIMEOUT = 4.0
    return 1.0


def test_an_attempt_is_due_once_per_interval(interval):
    beat = Heartbeat()
    beat._running[(7, 1)] = 100.0
    assert beat.due(100.5) == []
    assert beat.due(101.0) == [(7, 1)]
    assert beat.due(101.5) == []  # stamped at 101.0
    assert beat.due(102.0) == [(7, 1)]


@pytest.mark.django_db
def test_a_stamp_lands_only_on_the_attempt_still_running(make_agent, make_execution, interval):
    agent = make_agent()
    then = timezone.now() - timedelta(minutes=1)
    running = make_execution(agent, "running", at=then)
    cancelled = make_execution(agent, "cancelled", at=then)
    assert Heartbeat().stamp([(running.pk, 1), (running.pk, 2), (cancelled.pk, 1)]) == 1
    running.refresh_from_db()
    assert running.heartbeat_at > then + timedelta(seconds=59)


@pytest.mark.django_db(transaction=True)
def test_the_thread_stamps_while_the_block_runs_and_stops_after(
    make_agent, make_execution, interval
):
    then = timezone.now() - timedelta(minutes=1)
    execution = make_execution(make_agent(), "running", at=then)
    beat = Heartbeat()
    with beat.beating(execution_id=execution.pk, attempt=1):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            execution.refresh_from_db()
            if execution.heartbeat_at > then:
                break
            time.sleep(0.1)
        assert execution.heartbeat_at > then, "no stamp within 5 s at a 1 s interval"
        assert beat._thread.name == "conveyor-heartbeat"
    assert beat._running == {}
    last = execution.heartbeat_at
    time.sleep(2 * interval)
    execution.refresh_from_db()
    assert execution.heartbeat_at == last  # nothing stamps a finished block


@pytest.mark.django_db(transaction=True)
def test_one_thread_serves_every_attempt_of_the_process(make_agent, make_execution, interval):
    beat = Heartbeat()
    agent = make_agent()
    first, second = (make_execution(agent, "running") for _ in range(2))
    with beat.beating(execution_id=first.pk, attempt=1):
        thread = beat._thread
        with beat.beating(execution_id=second.pk, attempt=1):
            assert beat._thread is thread
            assert set(beat._running) == {(first.pk, 1), (second.pk, 1)}
    assert sum(t.name == "conveyor-heartbeat" for t in threading.enumerate()) >= 1
