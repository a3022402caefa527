"""executions.capacity without a worker: the claim's gates, what a waiting run records, and what
lets it go (a freed slot, the rate's time, a probe, a resume, the recovery pass)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import agent_pause, agent_resume
from executions import capacity
from executions.models import Destination, Execution, ExecutionLog, Limiter
from executions.services import (
    attempt_fail,
    attempt_succeed,
    execution_claim,
    execution_request,
)
from tests.conftest import failure

pytestmark = pytest.mark.django_db
WaitReason = Execution.WaitReason
Status = Execution.Status


def request(agent, **kwargs):
    return execution_request(agent=agent, trigger="api", input={}, **kwargs)


def claim(execution, at=None):
    execution.refresh_from_db()
    return execution_claim(
        execution_id=execution.pk,
        expected_attempt=execution.attempt,
        worker="test-worker@conveyor",
        at=at or timezone.now(),
    )


def test_agent_without_limits_has_no_gates(make_agent):
    assert capacity.gates(make_agent()) == []


def test_concurrency_limit_holds_the_third_run_until_a_slot_frees(
    make_agent, django_capture_on_commit_callbacks
):
    agent = make_agent(max_concurrency=2)
    first, second, third = request(agent), request(agent), request(agent)
    one, two = claim(first), claim(second)
    assert one and two
    assert claim(third) is None
    third.refresh_from_db()
    assert (third.status, third.wait_reason) == (Status.QUEUED, WaitReason.SLOT)
    assert third.waits_on == capacity.agent_key(agent)
    log = ExecutionLog.objects.get(execution=third)
    assert log.message == f"Waiting for a slot: 2 of 2 busy (the agent “{agent.name}”)."
    # A fourth run waits in line at once: runs start in order.
    fourth = request(agent)
    assert (fourth.wait_reason, fourth.waits_on) == (WaitReason.SLOT, capacity.agent_key(agent))

    execution, attempt = one
    with django_capture_on_commit_callbacks(execute=True):
        assert attempt_succeed(execution=execution, attempt=attempt, result=1, at=timezone.now())
    third.refresh_from_db()
    fourth.refresh_from_db()
    assert (third.wait_reason, third.waits_on) == (WaitReason.BROKER, "")
    assert fourth.wait_reason == WaitReason.SLOT  # one slot freed, one run let go
    assert claim(third) is not None
    assert claim(fourth) is None


def test_queue_concurrency_counts_every_agent_of_the_queue(make_agent, settings):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        settings.CONVEYOR_EXECUTIONS_QUEUE: {"description": "", "concurrency": 1},
    }
    a, b = make_agent(), make_agent()
    assert claim(request(a))
    waiting = request(b)
    # Not in line at request (the queue is full, so it waits at once).
    assert (waiting.wait_reason, waiting.waits_on) == (
        WaitReason.SLOT,
        f"queue:{settings.CONVEYOR_EXECUTIONS_QUEUE}",
    )
    assert claim(waiting) is None


def test_rate_limit_spaces_starts(make_agent):
    agent = make_agent(rate_limit="2/min")
    t0 = timezone.now()
    runs = [request(agent) for _ in range(3)]
    assert claim(runs[0], t0) and claim(runs[1], t0 + timedelta(seconds=1))
    assert claim(runs[2], t0 + timedelta(seconds=2)) is None
    runs[2].refresh_from_db()
    assert runs[2].wait_reason == WaitReason.RATE
    assert abs((runs[2].wait_until - (t0 + timedelta(seconds=60))).total_seconds()) < 0.01
    # Not yet due: the recovery pass leaves it; due: it goes, and its claim passes.
    assert capacity.release_due(at=t0 + timedelta(seconds=30)) == 0
    assert capacity.release_due(at=t0 + timedelta(seconds=61)) == 1
    assert claim(runs[2], t0 + timedelta(seconds=61)) is not None


def test_runs_waiting_for_a_rate_start_in_line_each_told_its_own_time(make_agent):
    agent = make_agent(rate_limit="2/min")
    t0 = timezone.now()
    runs = [request(agent) for _ in range(6)]
    assert claim(runs[0], t0) and claim(runs[1], t0 + timedelta(seconds=10))
    # The next four in turn: the first freed start, the second, then a period later each.
    for n, run in enumerate(runs[2:]):
        assert claim(run, t0 + timedelta(seconds=20 + n)) is None
    expected = [60, 70, 120, 130]
    for run, seconds in zip(runs[2:], expected, strict=True):
        run.refresh_from_db()
        assert run.wait_reason == WaitReason.RATE
        assert abs((run.wait_until - (t0 + timedelta(seconds=seconds))).total_seconds()) < 0.01

    # At the first freed start the youngest's message arrives first: it waits, the oldest goes.
    at = t0 + timedelta(seconds=61)
    assert capacity.release_due(at=at) == 1
    youngest, oldest = runs[5], runs[2]
    youngest.refresh_from_db()
    Execution.objects.filter(pk=youngest.pk).update(wait_reason=WaitReason.BROKER, waits_on="")
    assert claim(youngest, at) is None
    youngest.refresh_from_db()
    assert youngest.wait_reason == WaitReason.RATE
    assert claim(oldest, at) is not None


def test_destination_rate_limit_is_shared_by_agents_calling_the_host(make_agent):
    Destination.objects.create(host="api.example.com", rate_limit="1/min")
    capacity.forget_destinations()
    config = {"url": "https://api.example.com/a", "method": "POST"}
    a = make_agent(kind="http", config=config)
    b = make_agent(kind="http", config={**config, "url": "https://API.example.com:8443/b"})
    assert claim(request(a))
    waiting = request(b)
    assert claim(waiting) is None
    waiting.refresh_from_db()
    assert (waiting.wait_reason, waiting.waits_on) == (WaitReason.RATE, "host:api.example.com")


def fail(run, number=1, category="network"):
    execution, _ = run
    attempt_fail(
        execution=execution,
        number=number,
        error=failure(category, retryable=True, reason="The server answered 503."),
        at=timezone.now(),
    )


def test_breaker_opens_probes_and_closes(make_agent, django_capture_on_commit_callbacks):
    agent = make_agent(breaker_threshold=2, breaker_cooldown=30, max_retries=0)
    key = capacity.agent_key(agent)
    with django_capture_on_commit_callbacks(execute=True):
        fail(claim(request(agent)))
    assert Limiter.objects.get(key=key).failures == 1
    with django_capture_on_commit_callbacks(execute=True):
        fail(claim(request(agent)))
    limiter = Limiter.objects.get(key=key)
    assert limiter.state == Limiter.State.OPEN
    assert limiter.last_failure.startswith("The server answered 503.")

    waiting = [request(agent) for _ in range(2)]
    for run in waiting:
        assert claim(run) is None
        run.refresh_from_db()
        assert run.wait_reason == WaitReason.CIRCUIT
        assert run.wait_until == limiter.probe_at
    # The probe's time: both go; the first claimed is the probe, the other waits for it.
    assert capacity.release_due(at=limiter.probe_at) == 2
    probe = claim(waiting[0], limiter.probe_at)
    assert probe is not None
    assert claim(waiting[1], limiter.probe_at) is None
    waiting[1].refresh_from_db()
    assert (waiting[1].wait_reason, waiting[1].wait_until) == (WaitReason.CIRCUIT, None)
    limiter.refresh_from_db()
    assert (limiter.state, limiter.probe_execution) == (Limiter.State.HALF_OPEN, probe[0].pk)

    with django_capture_on_commit_callbacks(execute=True):
        execution, attempt = probe
        attempt_succeed(execution=execution, attempt=attempt, result=None, at=timezone.now())
    limiter.refresh_from_db()
    waiting[1].refresh_from_db()
    assert (limiter.state, limiter.failures) == (Limiter.State.CLOSED, 0)
    assert waiting[1].wait_reason == WaitReason.BROKER


def test_failed_probe_opens_again_for_longer(make_agent, django_capture_on_commit_callbacks):
    agent = make_agent(breaker_threshold=1, breaker_cooldown=10, max_retries=0)
    key = capacity.agent_key(agent)
    with django_capture_on_commit_callbacks(execute=True):
        fail(claim(request(agent)))
    opened = Limiter.objects.get(key=key)
    waiter, next_one = request(agent), request(agent)
    probe = claim(waiter, opened.probe_at)
    assert claim(next_one, opened.probe_at) is None
    with django_capture_on_commit_callbacks(execute=True):
        fail(probe)
    limiter = Limiter.objects.get(key=key)
    assert limiter.state == Limiter.State.OPEN
    assert limiter.cooldown == 20
    next_one.refresh_from_db()
    assert next_one.wait_until == limiter.probe_at  # waits for the next probe, with its time


def test_permanent_errors_do_not_open_the_breaker(make_agent, django_capture_on_commit_callbacks):
    agent = make_agent(breaker_threshold=1, max_retries=0)
    with django_capture_on_commit_callbacks(execute=True):
        execution, _ = claim(request(agent))
        attempt_fail(
            execution=execution,
            number=1,
            error=failure("invalid_input", retryable=False),
            at=timezone.now(),
        )
    assert not Limiter.objects.filter(key=capacity.agent_key(agent), state="open").exists()


def test_breaker_closed_by_hand_lets_runs_go(make_agent, django_capture_on_commit_callbacks):
    agent = make_agent(breaker_threshold=1, max_retries=0)
    key = capacity.agent_key(agent)
    with django_capture_on_commit_callbacks(execute=True):
        fail(claim(request(agent)))
    run = request(agent)
    assert claim(run) is None
    assert capacity.breaker_close(key=key, by="sam") is True
    assert capacity.breaker_close(key=key, by="sam") is False  # already closed
    run.refresh_from_db()
    assert run.wait_reason == WaitReason.BROKER
    assert claim(run) is not None


def test_paused_agent_runs_wait_and_go_on_resume(make_agent):
    agent = make_agent()
    run = request(agent)
    agent_pause(agent=agent)
    agent.refresh_from_db()
    assert claim(run) is None
    run.refresh_from_db()
    assert (run.wait_reason, run.waits_on) == (WaitReason.PAUSED, capacity.agent_key(agent))
    assert agent_resume(agent=agent)
    run.refresh_from_db()
    assert run.wait_reason == WaitReason.BROKER
    assert claim(run) is not None


def test_recovery_pass_frees_slots_a_lost_message_left(make_agent):
    agent = make_agent(max_concurrency=1)
    first, second = request(agent), request(agent)
    execution, attempt = claim(first)
    assert claim(second) is None
    # The first run ends but its slot's release is lost (on-commit callbacks not run here).
    attempt_succeed(execution=execution, attempt=attempt, result=None, at=timezone.now())
    second.refresh_from_db()
    assert second.wait_reason == WaitReason.SLOT
    assert capacity.release_due(at=timezone.now()) == 1
    second.refresh_from_db()
    assert second.wait_reason == WaitReason.BROKER


def test_retrying_run_over_the_limit_waits_as_retrying(
    make_agent, django_capture_on_commit_callbacks
):
    agent = make_agent(max_concurrency=1, max_retries=2)
    retried, other = request(agent), request(agent)
    fail(claim(retried))
    assert claim(other) is not None
    retried.refresh_from_db()
    assert retried.status == Status.RETRYING
    assert claim(retried) is None
    retried.refresh_from_db()
    assert (retried.status, retried.wait_reason) == (Status.RETRYING, WaitReason.SLOT)
    assert claim(other) is None  # already running: nothing to claim
    running = Execution.objects.get(pk=other.pk)
    with django_capture_on_commit_callbacks(execute=True):
        attempt_succeed(
            execution=running, attempt=running.attempts.get(), result=None, at=timezone.now()
        )
    retried.refresh_from_db()
    assert (retried.wait_reason, retried.waits_on) == (WaitReason.BACKOFF, "")
    claimed = claim(retried)
    assert claimed is not None and claimed[0].attempt == 2
