"""The recovery passes of the dispatcher's tick, called directly with pinned time: delayed runs
are handed over once when due, stranded executions are published again, and lost attempts are
reaped."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from executions.models import Execution, ExecutionAttempt
from executions.recovery import (
    ReaperWatch,
    publish_due,
    reap_lost_attempts,
    republish_stranded,
)
from executions.services import execution_claim, execution_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


# --- Delayed runs ----------------------------------------------------------------------------


def test_a_delayed_run_is_not_sent_at_creation_and_is_sent_once_when_due(
    make_agent, now, django_capture_on_commit_callbacks
):
    agent = make_agent()
    start = now + timedelta(minutes=10)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        execution = execution_request(agent=agent, trigger="manual", not_before=start, at=now)
    assert callbacks == []
    assert (execution.wait_reason, execution.wait_until) == ("delayed", start)
    assert publish_due(at=start - timedelta(seconds=1)) == 0

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert publish_due(at=start) == 1
        assert publish_due(at=start + timedelta(seconds=2)) == 0  # a second tick: already sent
    assert len(callbacks) == 1
    execution.refresh_from_db()
    assert execution.status == "queued"
    assert execution.not_before == start  # kept: the page says it was delayed
    # Handed to the broker then; it now waits for a worker.
    assert (execution.wait_reason, execution.wait_until, execution.published_at) == (
        "broker",
        None,
        start,
    )


def test_a_run_due_at_creation_is_sent_by_creation_and_not_again_by_the_dispatcher(
    make_agent, now, django_capture_on_commit_callbacks
):
    agent = make_agent()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        execution_request(agent=agent, trigger="api", not_before=now - timedelta(seconds=5), at=now)
        assert publish_due(at=now + timedelta(seconds=1)) == 0
    assert len(callbacks) == 1


def test_a_cancelled_delayed_run_is_never_sent(make_agent, now):
    from executions.services import execution_cancel

    execution = execution_request(
        agent=make_agent(), trigger="manual", not_before=now + timedelta(minutes=1), at=now
    )
    execution_cancel(execution=execution, at=now)
    assert publish_due(at=now + timedelta(minutes=2)) == 0


# --- Stranded executions ------------------------------------------------------------------------


@override_settings(CONVEYOR_REPUBLISH_AFTER=60)
def test_a_queued_execution_never_claimed_is_sent_again_less_and_less_often(
    make_agent, now, django_capture_on_commit_callbacks
):
    execution = execution_request(agent=make_agent(), trigger="manual", at=now)

    def republish(after_seconds):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            count = republish_stranded(at=now + timedelta(seconds=after_seconds))
        assert count == len(callbacks)
        return count

    assert republish(59) == 0
    assert republish(60) == 1  # 60 s unclaimed
    assert republish(60) == 0  # another tick at the same time: the stamp moved on
    assert republish(119) == 0  # it had waited 60 s: the next try waits as long
    assert republish(120) == 1
    assert republish(239) == 0
    assert republish(240) == 1  # then 2 minutes, and so on
    execution.refresh_from_db()
    assert execution.status == "queued" and execution.published_at == now + timedelta(seconds=240)


@override_settings(CONVEYOR_REPUBLISH_AFTER=60)
def test_a_delayed_run_counts_its_wait_from_its_start_time(make_agent, now):
    start = now + timedelta(hours=2)
    execution_request(agent=make_agent(), trigger="manual", not_before=start, at=now)
    publish_due(at=start)
    assert republish_stranded(at=start + timedelta(seconds=59)) == 0
    assert republish_stranded(at=start + timedelta(seconds=60)) == 1


@override_settings(CONVEYOR_REPUBLISH_AFTER=60)
def test_held_and_future_runs_are_not_stranded(make_agent, now):
    agent = make_agent()
    execution_request(agent=agent, trigger="manual", not_before=now + timedelta(hours=1), at=now)
    assert republish_stranded(at=now + timedelta(minutes=30)) == 0


@override_settings(CONVEYOR_REPUBLISH_AFTER=60)
def test_an_overdue_retry_is_sent_again_once_per_grace_period(
    make_agent, make_execution, now, django_capture_on_commit_callbacks
):
    execution = make_execution(make_agent(), "retrying", at=now)
    due = execution.next_attempt_at

    assert republish_stranded(at=due + timedelta(seconds=59)) == 0
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert republish_stranded(at=due + timedelta(seconds=60)) == 1
    assert len(callbacks) == 1
    assert republish_stranded(at=due + timedelta(seconds=61)) == 0


# --- Lost attempts ------------------------------------------------------------------------------


@pytest.fixture
def heartbeat_timeout(settings):
    settings.CONVEYOR_HEARTBEAT_INTERVAL = 5
    settings.CONVEYOR_HEARTBEAT_TIMEOUT = 20
    return 20


def test_an_attempt_whose_heartbeat_stopped_is_reaped_and_retried(
    make_agent, make_execution, now, heartbeat_timeout, django_capture_on_commit_callbacks
):
    # A long timeout: the heartbeat, not the agent's time limit, decides.
    agent = make_agent(timeout=3600, max_retries=2, retry_backoff=1)
    execution = make_execution(agent, "running", at=now)
    assert execution.heartbeat_at == now  # stamped by the claim

    assert reap_lost_attempts(at=now + timedelta(seconds=heartbeat_timeout)) == 0
    later = now + timedelta(seconds=heartbeat_timeout + 1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert reap_lost_attempts(at=later) == 1
        assert reap_lost_attempts(at=later + timedelta(seconds=1)) == 0
    assert len(callbacks) == 1  # the next attempt is enqueued

    execution.refresh_from_db()
    assert execution.status == "retrying"
    assert execution.error_category == "worker_lost"
    assert "stopped before the attempt finished" in execution.error_message
    assert "(attempt 2 of 3)" in execution.error_message
    detail = "sent no heartbeat for 21 s (a live worker sends one every 5 s)"
    assert detail in execution.error_detail
    attempt = ExecutionAttempt.objects.get(execution=execution)
    assert (attempt.outcome, attempt.error_category) == ("lost", "worker_lost")
    assert attempt.finished_at == later


def test_a_lost_attempt_with_no_retries_left_fails_as_worker_lost(
    make_agent, make_execution, now, heartbeat_timeout
):
    execution = make_execution(make_agent(timeout=10, max_retries=0), "running", at=now)
    assert reap_lost_attempts(at=now + timedelta(minutes=5)) == 1
    execution.refresh_from_db()
    assert execution.status == "failed" and execution.error_category == "worker_lost"
    assert "No attempts are left (1 of 1 used)" in execution.error_message
    assert execution.finished_at == now + timedelta(minutes=5)
    assert execution.attempts.get().outcome == "lost"


def test_a_long_attempt_with_a_fresh_heartbeat_is_left_alone(
    make_agent, make_execution, now, heartbeat_timeout
):
    # Running for an hour, far past its timeout: still stamping, so still alive (stopping it at
    # its time limit is the worker's job).
    execution = make_execution(make_agent(timeout=10), "running", at=now)
    an_hour = now + timedelta(hours=1)
    Execution.objects.filter(pk=execution.pk).update(heartbeat_at=an_hour - timedelta(seconds=5))
    assert reap_lost_attempts(at=an_hour) == 0
    execution.refresh_from_db()
    assert execution.status == "running"


def test_the_silence_is_counted_from_the_current_attempt(
    make_agent, make_execution, now, heartbeat_timeout
):
    agent = make_agent(timeout=10, max_retries=3, retry_backoff=1)
    # The first attempt failed long ago; the second was claimed (and stamped) just now.
    execution = make_execution(agent, "retrying", at=now - timedelta(hours=1))
    assert execution_claim(execution_id=execution.pk, expected_attempt=1, worker="w", at=now)
    assert reap_lost_attempts(at=now + timedelta(seconds=20)) == 0
    assert reap_lost_attempts(at=now + timedelta(seconds=21)) == 1


# --- The reaper's own watch ---------------------------------------------------------------------


def test_the_reaper_waits_a_whole_timeout_of_seeing_the_database_before_it_reaps(
    now, heartbeat_timeout
):
    watch = ReaperWatch()
    ticks = [now + timedelta(seconds=2 * n) for n in range(12)]  # a tick every 2 s
    ready = []
    for at in ticks:
        ready.append(watch.ready(at))
        watch.saw_database(at)
    # A new process: not before it has seen the database for 20 s.
    assert ready == [False] * 10 + [True, True]


def test_after_a_gap_in_its_passes_the_reaper_waits_again(now, heartbeat_timeout):
    watch = ReaperWatch()
    for n in range(12):
        watch.ready(now + timedelta(seconds=2 * n))
        watch.saw_database(now + timedelta(seconds=2 * n))
    assert watch.ready(now + timedelta(seconds=24))
    # The database was away for a minute (no pass reached it): heartbeats could not be written
    # either, so silent ones prove nothing until the workers have had time to stamp again.
    back = now + timedelta(seconds=84)
    ready = []
    for n in range(12):
        at = back + timedelta(seconds=2 * n)
        ready.append(watch.ready(at))
        watch.saw_database(at)
    assert ready == [False] * 10 + [True, True]
