"""Flows end to end, through a real worker, the broker, the database and (where time must pass)
celery beat's dispatcher ticks: steps run as executions of their own, retry, wait without
holding a worker, stop at the flow's time limit, survive a worker killed between two steps, and
a retried flow resumes at the step that failed. Also: a function's checkpoint outlives a worker
killed mid-run."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.conf import settings

from agents.services import agent_pause, agent_update
from executions.flows import ADVANCE_GRACE
from executions.models import Execution, FlowStep
from executions.services import execution_cancel, execution_request, execution_retry
from tests.conftest import wait_for
from tests.hooks.apps import kill_marker
from tests.stack import BEAT_INTERVAL, WORKER_LOG


def eventually(check, *, timeout: float, what: str):
    """Poll ``check()`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not after {timeout} s.\nworker log:\n"
                f"{WORKER_LOG.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.05)


def steps_of(flow) -> dict[str, FlowStep]:
    return {s.key: s for s in FlowStep.objects.filter(flow=flow).select_related("execution")}


def children(flow) -> list[Execution]:
    return list(Execution.objects.filter(parent=flow).order_by("step_index", "step_key"))


def step_execution(flow, key, *statuses, timeout=20) -> Execution:
    """The execution of step ``key``, once it exists (and is in one of ``statuses``)."""

    def check():
        found = Execution.objects.filter(parent=flow, step_key=key).first()
        return found if found and (not statuses or found.status in statuses) else None

    return eventually(check, timeout=timeout, what=f"step “{key}” {' or '.join(statuses)}")


def finished(flow, timeout=30) -> Execution:
    return wait_for(flow, "succeeded", "failed", "cancelled", timeout=timeout)


@pytest.fixture
def echo(make_agent):
    return make_agent(name="echo")


def run(key, agent="echo", **fields):
    return {"key": key, "agent": agent, **fields}


def flow_of(make_agent, *steps, **config):
    return make_agent(name="flow", kind="flow", config={"steps": list(steps), **config})


# --- Running and retrying steps -------------------------------------------------------------


def test_a_flows_steps_run_in_order_and_a_step_retries_with_the_flows_settings(
    worker, make_agent, echo
):
    # The step agent retries nothing itself: the flow's retry settings win over its own.
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=0)
    flow_agent = flow_of(
        make_agent,
        run("a", input={"x": "{{ input.x }}"}),
        run("b", "flaky", input={"fail_times": 2}),
        run("c", input={"x": "{{ steps.a.result.x }}", "b": "{{ steps.b.result }}"}),
        retry={"max_retries": 2, "backoff": 1},
    )

    flow = finished(execution_request(agent=flow_agent, trigger="manual", input={"x": 5}))

    assert flow.status == "succeeded", flow.error_message
    assert flow.result == {"x": 5, "b": {"succeeded_on_attempt": 3}}
    assert [(c.step_key, c.status, c.attempt, c.trigger) for c in children(flow)] == [
        ("a", "succeeded", 1, "flow"),
        ("b", "succeeded", 3, "flow"),
        ("c", "succeeded", 1, "flow"),
    ]
    flaky_run = steps_of(flow)["b"].execution
    assert [a.outcome for a in flaky_run.attempts.order_by("number")] == [
        "failed",
        "failed",
        "succeeded",
    ]
    assert all(s.status == "succeeded" for s in steps_of(flow).values())
    assert [a.outcome for a in flow.attempts.all()] == ["succeeded"]
    assert list(flow.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "succeeded",
    ]


def test_a_steps_own_retry_settings_win_over_the_flows_and_its_agents(worker, make_agent, echo):
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=3)
    flow_agent = flow_of(
        make_agent,
        run("a"),
        run("b", "flaky", input={"fail_times": 2}, retry={"max_retries": 0}),
        run("c"),
        retry={"max_retries": 3},
    )

    flow = finished(execution_request(agent=flow_agent, trigger="manual"))

    assert flow.status == "failed"
    assert flow.error_message.startswith("Step “b” failed after 1 attempt"), flow.error_message
    assert "(no retries allowed)" in flow.error_message
    assert "temporarily unavailable" in flow.error_message
    steps = steps_of(flow)
    assert flow.error_category == steps["b"].execution.error_category == "upstream_error"
    assert (steps["b"].execution.attempt, steps["b"].execution.attempts.count()) == (1, 1)
    assert [steps[k].status for k in "abc"] == ["succeeded", "failed", "skipped"]
    assert [c.step_key for c in children(flow)] == ["a", "b"]


def test_a_retried_flow_reruns_from_the_failed_step_reusing_what_succeeded(
    worker, make_agent, echo
):
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=0)
    flow_agent = flow_of(
        make_agent,
        run("a", input={"x": "{{ input.x }}"}),
        run("b", "flaky", input={"fail_times": "{{ input.fails }}"}),
        run("c", input={"from_a": "{{ steps.a.result }}"}),
    )
    flow = finished(
        execution_request(agent=flow_agent, trigger="manual", input={"x": 1, "fails": 5})
    )
    assert flow.status == "failed"
    first_a = steps_of(flow)["a"].execution

    retry = finished(execution_retry(execution=flow, input={"x": 2, "fails": 0}, by="alice"))

    assert retry.status == "succeeded", retry.error_message
    assert retry.retry_of == flow
    steps = steps_of(retry)
    assert steps["a"].status == "succeeded"
    assert steps["a"].reused_from == first_a and steps["a"].execution is None
    assert steps["a"].result == {"x": 1}, "the first run's result, not run again"
    assert [c.step_key for c in children(retry)] == ["b", "c"]
    assert steps["b"].execution.attempt == 1
    assert retry.result == {"from_a": {"x": 1}}
    # The first step's agent ran once in all.
    assert Execution.objects.filter(agent=echo, step_key="a").count() == 1


# --- Parallel groups and results ----------------------------------------------------------------


def test_a_parallel_group_with_a_failing_member_fails_the_flow_naming_it(worker, make_agent, echo):
    make_agent(name="broken", config={"function": "demo.broken"})
    make_agent(name="slow", config={"function": "demo.slow"})
    flow_agent = flow_of(
        make_agent,
        {
            "key": "g",
            "parallel": [
                run("p1", input={"n": 1}),
                run("p2", "broken"),
                run("p3", "slow", input={"seconds": 1, "steps": 2}),
            ],
        },
        run("after"),
    )

    flow = finished(execution_request(agent=flow_agent, trigger="manual"))

    assert flow.status == "failed"
    assert flow.error_message.startswith("Step “p2” (in parallel group “g”) failed after 1 attempt")
    assert flow.error_category == "invalid_input"
    steps = steps_of(flow)
    assert (steps["p1"].status, steps["p1"].result) == ("succeeded", {"n": 1})
    assert (steps["p3"].status, steps["p3"].result) == ("succeeded", {"steps": 2, "seconds": 1})
    assert (steps["g"].status, steps["after"].status) == ("failed", "skipped")
    assert sorted(c.step_key for c in children(flow)) == ["p1", "p2", "p3"]


def test_a_flow_with_result_all_returns_every_steps_result_by_key(worker, make_agent, echo):
    flow_agent = flow_of(
        make_agent,
        run("a", input="A"),
        {"key": "g", "parallel": [run("m1", input=1), run("m2", input={"two": 2})]},
        run("c", input=["{{ steps.g.result.m2.two }}"]),
        result="all",
    )

    flow = finished(execution_request(agent=flow_agent, trigger="manual"))

    assert flow.status == "succeeded", flow.error_message
    assert flow.result == {"a": "A", "g": {"m1": 1, "m2": {"two": 2}}, "c": [2]}


def test_a_missing_path_at_run_time_fails_the_flow_naming_the_reference(worker, make_agent, echo):
    flow_agent = flow_of(
        make_agent, run("a", input={"x": 1}), run("b", input={"y": "{{ steps.a.result.nope }}"})
    )

    flow = finished(execution_request(agent=flow_agent, trigger="manual"))

    assert flow.status == "failed"
    assert flow.error_category == "invalid_input"
    assert flow.error_message.startswith("Step “b” could not start: {{ steps.a.result.nope }}")
    assert "has no “nope”" in flow.error_message
    assert [c.step_key for c in children(flow)] == ["a"]


def test_a_paused_step_agent_fails_the_flow_saying_so(worker, make_agent, echo):
    resting = make_agent(name="resting")
    flow_agent = flow_of(make_agent, run("a"), run("b", "resting"))
    agent_pause(agent=resting)

    flow = finished(execution_request(agent=flow_agent, trigger="manual"))

    assert flow.status == "failed"
    assert "“resting” is paused" in flow.error_message
    assert flow.error_message.startswith("Step “b” could not start")
    assert [c.step_key for c in children(flow)] == ["a"]


# --- Stopping ---------------------------------------------------------------------------------


def slow_flow(make_agent, **config):
    make_agent(name="slow", config={"function": "demo.slow"}, timeout=60)
    return flow_of(
        make_agent,
        run("a"),
        run("long", "slow", input={"seconds": 30, "steps": 60}),
        run("c"),
        **config,
    )


def wait_until_stopped(execution, timeout=10):
    """Until the step's agent has stopped and its attempt is closed."""
    return eventually(
        lambda: execution.attempts.filter(finished_at__isnull=False).first(),
        timeout=timeout,
        what="the step's attempt closed",
    )


def test_cancelling_a_running_flow_cancels_its_step_and_skips_the_rest(worker, make_agent, echo):
    flow = execution_request(agent=slow_flow(make_agent), trigger="manual")
    long = step_execution(flow, "long", "running")

    flow.refresh_from_db()
    assert execution_cancel(execution=flow, by="alice")

    flow.refresh_from_db()
    long.refresh_from_db()
    assert (flow.status, long.status) == ("cancelled", "cancelled")
    assert wait_until_stopped(long).outcome == "cancelled"
    steps = steps_of(flow)
    assert [steps[k].status for k in ("a", "long", "c")] == ["succeeded", "cancelled", "skipped"]
    assert [a.outcome for a in flow.attempts.all()] == ["cancelled"]
    time.sleep(0.5)  # the step's end, told to the flow, changes nothing
    assert [c.step_key for c in children(flow)] == ["a", "long"]
    flow.refresh_from_db()
    assert flow.status == "cancelled"


@pytest.mark.slow
def test_a_flow_past_its_time_limit_is_stopped_naming_the_running_step(
    worker, make_agent, echo, beat
):
    beat()
    flow_agent = slow_flow(make_agent, timeout=2)

    flow = finished(execution_request(agent=flow_agent, trigger="manual"), timeout=30)

    assert flow.status == "failed"
    assert flow.error_category == "timeout"
    assert "time limit of 2 s" in flow.error_message
    assert "step “long” was still running" in flow.error_message
    steps = steps_of(flow)
    assert [steps[k].status for k in ("a", "long", "c")] == ["succeeded", "cancelled", "skipped"]
    long = steps["long"].execution
    assert long.status == "cancelled"
    assert wait_until_stopped(long).outcome == "cancelled"
    assert [c.step_key for c in children(flow)] == ["a", "long"]
    assert flow.duration < timedelta(seconds=15)


# --- Waits ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_wait_step_holds_no_worker_and_the_next_step_starts_after_it(
    private_worker, make_agent, beat
):
    # One worker process for the flow's steps and another run: it must be free while the
    # flow waits. (Advancing flows and the ticks run on the session's worker.)
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-waits"
    private_worker(queue)
    beat()
    make_agent(name="echo", queue=queue)
    slow = make_agent(name="slow", config={"function": "demo.slow"}, queue=queue)
    flow_agent = make_agent(
        name="flow",
        kind="flow",
        queue=queue,
        config={"steps": [run("a"), {"key": "w", "wait": {"seconds": 5}}, run("b")]},
    )
    flow = execution_request(agent=flow_agent, trigger="manual")
    wait = eventually(
        lambda: FlowStep.objects.filter(flow=flow, key="w", status="waiting").first(),
        timeout=20,
        what="the flow's wait",
    )
    flow.refresh_from_db()
    assert (flow.status, flow.wait_reason, flow.wait_until) == ("running", "pause", wait.wait_until)

    other = wait_for(
        execution_request(agent=slow, trigger="manual", input={"seconds": 2, "steps": 4}),
        "succeeded",
        "failed",
        timeout=20,
    )

    assert other.status == "succeeded"
    assert other.finished_at < wait.wait_until, "it ran while the flow waited"
    flow = finished(flow, timeout=20)
    assert flow.status == "succeeded", flow.error_message
    started = steps_of(flow)["b"].started_at
    assert wait.wait_until <= started <= wait.wait_until + timedelta(seconds=BEAT_INTERVAL + 4)
    assert [a.outcome for a in flow.attempts.all()] == ["succeeded"]


# --- Workers killed ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_between_two_steps_leaves_the_flow_to_the_tick_and_runs_no_step_twice(
    private_worker, make_agent, beat
):
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-killed-between"
    private_worker(queue)
    beat()
    first = make_agent(name="first", queue=queue)
    make_agent(name="second", queue=queue)
    flow_agent = make_agent(
        name="flow",
        kind="flow",
        queue=queue,
        config={"steps": [run("a", "first"), run("b", "second"), run("c", "first")]},
    )
    marker = kill_marker()
    # The worker process that ends step a dies once that end is committed, before it asks for
    # the flow to be advanced (tests/hooks/apps.py).
    marker.write_text(f"{first.pk}:a")
    try:
        flow = finished(execution_request(agent=flow_agent, trigger="manual"), timeout=40)
        assert not marker.exists(), "the hook fired"
    finally:
        marker.unlink(missing_ok=True)

    assert flow.status == "succeeded", flow.error_message
    steps = steps_of(flow)
    ended_a = steps["a"].execution.finished_at
    # Nobody advanced the flow until the tick's recovery pass found the step ended.
    assert steps["b"].started_at >= ended_a + ADVANCE_GRACE
    assert [(c.step_key, c.status, c.attempt) for c in children(flow)] == [
        ("a", "succeeded", 1),
        ("b", "succeeded", 1),
        ("c", "succeeded", 1),
    ]
    assert all(c.attempts.count() == 1 for c in children(flow))


@pytest.mark.slow
def test_a_function_killed_mid_run_resumes_from_its_checkpoint(private_worker, make_agent, beat):
    beat()  # the reaper takes the lost attempt back
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-checkpoint"
    proc = private_worker(queue)
    agent = make_agent(config={"function": "demo.count"}, queue=queue, timeout=300, max_retries=2)
    execution = execution_request(agent=agent, trigger="manual", input={"to": 20, "seconds": 0.2})

    def three_counted():
        execution.refresh_from_db()
        saved = execution.checkpoint or {}
        return saved if saved.get("done", 0) >= 3 else None

    saved = eventually(three_counted, timeout=20, what="three checkpoints")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # The next attempt goes to the session's worker.
    agent_update(agent=agent, queue=settings.CONVEYOR_EXECUTIONS_QUEUE)

    execution = wait_for(execution, "succeeded", "failed", timeout=60)

    assert execution.status == "succeeded", execution.error_message
    resumed_from = execution.result["resumed_from"]
    assert resumed_from >= saved["done"] >= 3
    assert execution.result == {"counted": 20, "resumed_from": resumed_from, "attempt": 2}
    assert [a.outcome for a in execution.attempts.order_by("number")] == ["lost", "succeeded"]
    assert execution.logs.filter(
        attempt=2, message__startswith="Resuming from the checkpoint"
    ).exists()
    assert execution.checkpoint == {"done": 20}
