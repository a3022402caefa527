"""The flow engine (executions.flows) without a worker: the test calls what the tasks and the
dispatcher's tick call, and ends each step's execution through the services a worker uses
(claim, succeed, fail). In these tests nothing is committed, so no message is sent: the test
advances the flow itself, at the times it gives."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents.services import agent_pause
from executions.flows import ADVANCE_GRACE, advance_stalled, flow_advance, flow_start
from executions.models import Execution, FlowStep
from executions.recovery import reap_lost_attempts
from executions.services import execution_cancel, execution_claim, execution_retry
from tests.conftest import failure, flow_started, step_ended

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def echo(make_agent):
    return make_agent(name="echo")


@pytest.fixture
def make_flow(make_agent, echo):
    def make(*steps, **config):
        return make_agent(kind="flow", config={"steps": list(steps), **config})

    return make


def run(key, agent="echo", **fields):
    return {"key": key, "agent": agent, **fields}


def start(flow_agent, input=None, *, when=0):
    """Request a flow and start it as the executions.start_flow task does, at ``when``."""
    return flow_started(flow_agent, input, at=at(when))


def steps_of(flow) -> dict[str, FlowStep]:
    return {s.key: s for s in FlowStep.objects.filter(flow=flow).select_related("execution")}


def child(flow, key) -> Execution:
    step = FlowStep.objects.get(flow=flow, key=key)
    assert step.execution is not None, f"step {key} has no execution ({step.status}, {step.note})"
    return step.execution


def succeed(flow, key, result=None, *, when):
    """The step's execution runs once and succeeds with ``result`` (no advance is sent)."""
    step_ended(flow, key, result=result, at=at(when), advance=False)


def fail(flow, key, *, when, category="invalid_input", retryable=False, reason="It broke."):
    """The step's execution makes one attempt, which fails (a retry, if any, is not run; no
    advance is sent). Returns when its retry is due, None when it is not retried."""
    error = failure(category, retryable=retryable, reason=reason)
    return step_ended(flow, key, error=error, at=at(when), advance=False).next_attempt_at


def advance(flow, *, when):
    flow_advance(flow_id=flow.pk, at=at(when))
    flow.refresh_from_db()
    return steps_of(flow)


# --- Start ------------------------------------------------------------------------------------


def test_starting_a_flow_lays_out_every_step_and_starts_the_first(make_flow, echo):
    flow_agent = make_flow(
        run("a", input={"x": "{{ input.x }}", "fixed": [1]}),
        {"key": "w", "wait": {"seconds": 60}},
        {"key": "g", "parallel": [run("m1"), run("m2")]},
        run("c"),
    )

    flow = start(flow_agent, {"x": 5})

    rows = list(FlowStep.objects.filter(flow=flow))
    assert [(s.key, s.type, s.index, s.group, s.status) for s in rows] == [
        ("a", "run", 0, "", "running"),
        ("w", "wait", 1, "", "pending"),
        ("g", "group", 2, "", "pending"),
        ("m1", "run", 2, "g", "pending"),
        ("m2", "run", 2, "g", "pending"),
        ("c", "run", 3, "", "pending"),
    ]
    first = child(flow, "a")
    assert (first.agent, first.parent, first.step_key, first.step_index) == (echo, flow, "a", 0)
    assert (first.trigger, first.status, first.input) == ("flow", "queued", {"x": 5, "fixed": [1]})
    assert first.retry_override is None
    assert (flow.status, flow.attempt, flow.max_attempts) == ("running", 1, 1)
    assert (flow.wait_reason, flow.progress, flow.progress_message) == (
        "steps",
        0,
        "Step 1 of 4: a",
    )
    assert flow.deadline_at is None
    assert flow.attempts.get().finished_at is None  # open while its steps run


def test_a_duplicate_start_message_starts_nothing(make_flow):
    flow = start(make_flow(run("a"), run("b")))

    assert not flow_start(execution_id=flow.pk, expected_attempt=0, worker="w", at=at(1))
    assert not flow_start(execution_id=flow.pk, expected_attempt=1, worker="w", at=at(1))

    assert FlowStep.objects.filter(flow=flow).count() == 2
    assert Execution.objects.filter(parent=flow).count() == 1
    assert flow.attempts.count() == 1


def test_a_flow_with_a_time_limit_gets_a_deadline(make_flow):
    flow = start(make_flow(run("a"), timeout=90), when=10)

    assert flow.deadline_at == at(100)


# --- Advance ----------------------------------------------------------------------------------


def test_when_a_step_ends_the_next_starts_once_with_the_results_it_reads(make_flow):
    flow = start(
        make_flow(
            run("a"),
            run("b", input={"n": "{{ steps.a.result.n }}", "text": "got {{ steps.a.result }}"}),
            run("c"),
        )
    )
    succeed(flow, "a", {"n": 7}, when=1)

    advance(flow, when=2)
    steps = advance(flow, when=3)  # a repeated advance starts nothing more

    assert steps["a"].status == "succeeded" and steps["a"].result == {"n": 7}
    assert steps["b"].status == "running"
    assert steps["b"].started_at == at(2)
    assert steps["b"].execution.input == {"n": 7, "text": 'got {"n": 7}'}
    assert Execution.objects.filter(parent=flow).count() == 2
    assert (flow.progress, flow.progress_message) == (33, "Step 2 of 3: b")


def test_an_advance_while_the_step_still_runs_changes_nothing(make_flow):
    flow = start(make_flow(run("a"), run("b")))
    execution = child(flow, "a")
    execution_claim(execution_id=execution.pk, expected_attempt=0, worker="w", at=at(1))

    steps = advance(flow, when=2)

    assert (steps["a"].status, steps["b"].status) == ("running", "pending")
    assert flow.progress_message == "Step 1 of 2: a"


def test_a_step_being_retried_keeps_the_flow_waiting_on_it(make_flow, make_agent):
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=2)
    flow = start(make_flow(run("a", "flaky"), run("b")))

    assert fail(flow, "a", when=1, category="network", retryable=True) is not None
    steps = advance(flow, when=2)

    assert steps["a"].status == "running"
    assert steps["a"].execution.status == "retrying"
    assert flow.status == "running"


def test_the_last_step_succeeding_finishes_the_flow_with_its_result(make_flow):
    flow = start(make_flow(run("a"), run("b")), when=0)
    succeed(flow, "a", {"n": 1}, when=1)
    advance(flow, when=2)
    succeed(flow, "b", {"n": 2}, when=3)

    advance(flow, when=4)

    assert flow.status == "succeeded"
    assert flow.result == {"n": 2}
    assert (flow.progress, flow.wait_reason, flow.progress_message) == (100, "", "")
    assert flow.finished_at == at(4) and flow.duration == timedelta(seconds=4)
    attempt = flow.attempts.get()
    assert (attempt.outcome, attempt.finished_at) == ("succeeded", at(4))
    assert list(flow.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "succeeded",
    ]


def test_a_flow_with_result_all_returns_every_steps_result_by_key(make_flow):
    flow = start(
        make_flow(
            run("a"),
            {"wait": {"seconds": 1}},
            {"key": "g", "parallel": [run("m1"), run("m2")]},
            result="all",
        )
    )
    succeed(flow, "a", "A", when=1)
    advance(flow, when=2)
    advance(flow, when=4)  # the wait is over
    succeed(flow, "m1", 1, when=5)
    succeed(flow, "m2", [2], when=5)

    advance(flow, when=6)

    assert flow.status == "succeeded"
    assert flow.result == {"a": "A", "g": {"m1": 1, "m2": [2]}}


# --- Waits --------------------------------------------------------------------------------------


def test_a_wait_step_holds_the_flow_until_its_time_then_the_tick_moves_it_on(make_flow):
    flow = start(make_flow(run("a"), {"key": "w", "wait": {"seconds": 60}}, run("b")))
    succeed(flow, "a", None, when=1)

    steps = advance(flow, when=2)

    assert steps["w"].status == "waiting"
    assert steps["w"].wait_until == at(62)
    assert (flow.wait_reason, flow.wait_until) == ("pause", at(62))
    assert flow.progress_message == "Step 2 of 3: waiting (w)"

    assert advance_stalled(at=at(61)) == 0
    assert FlowStep.objects.get(flow=flow, key="b").status == "pending"

    assert advance_stalled(at=at(62.5)) == 1
    steps = steps_of(flow)
    assert steps["w"].status == "succeeded" and steps["w"].finished_at == at(62.5)
    assert steps["b"].status == "running" and steps["b"].started_at == at(62.5)
    flow.refresh_from_db()
    assert (flow.wait_reason, flow.wait_until) == ("steps", None)


def test_a_wait_until_a_time_read_from_an_earlier_step(make_flow):
    flow = start(
        make_flow(run("a"), {"key": "w", "wait": {"until": "{{ steps.a.result.at }}"}}, run("b"))
    )
    succeed(flow, "a", {"at": at(300).isoformat()}, when=1)

    steps = advance(flow, when=2)

    assert steps["w"].status == "waiting" and steps["w"].wait_until == at(300)


def test_a_wait_until_a_time_already_past_moves_on_at_once(make_flow):
    flow = start(
        make_flow(run("a"), {"key": "w", "wait": {"until": "{{ steps.a.result }}"}}, run("b"))
    )
    succeed(flow, "a", "2001-01-01T00:00:00Z", when=1)

    steps = advance(flow, when=2)

    assert steps["w"].status == "succeeded"
    assert steps["b"].status == "running"


def test_a_wait_until_something_that_is_not_a_time_fails_the_flow(make_flow):
    flow = start(
        make_flow(run("a"), {"key": "w", "wait": {"until": "{{ steps.a.result }}"}}, run("b"))
    )
    succeed(flow, "a", "soon", when=1)

    steps = advance(flow, when=2)

    assert flow.status == "failed"
    assert flow.error_category == "invalid_input"
    assert flow.error_message.startswith("Step “w” could not start: the time to wait until")
    assert "'soon'" in flow.error_message
    assert steps["b"].status == "skipped"


# --- Parallel groups ----------------------------------------------------------------------------


def test_a_group_starts_all_its_members_and_ends_when_all_have(make_flow):
    flow = start(
        make_flow(
            run("a"),
            {"key": "g", "parallel": [run("m1"), run("m2"), run("m3")]},
            run("c", input={"first": "{{ steps.g.result.m1 }}", "third": "{{ steps.m3.result }}"}),
        )
    )
    succeed(flow, "a", None, when=1)
    steps = advance(flow, when=2)
    assert [steps[k].status for k in ("g", "m1", "m2", "m3")] == ["running"] * 4
    assert flow.progress_message == "Step 2 of 3: g"

    succeed(flow, "m1", "one", when=3)
    succeed(flow, "m3", "three", when=3)
    steps = advance(flow, when=4)
    assert steps["g"].status == "running" and steps["c"].status == "pending"
    assert flow.progress == 60  # a, m1 and m3 of the five run steps (a, m1, m2, m3, c)

    succeed(flow, "m2", "two", when=5)
    steps = advance(flow, when=6)

    assert steps["g"].status == "succeeded"
    assert steps["g"].result == {"m1": "one", "m2": "two", "m3": "three"}
    assert steps["c"].execution.input == {"first": "one", "third": "three"}


def test_a_failed_member_fails_the_flow_once_the_others_have_ended(make_flow, make_agent):
    flow = start(make_flow({"key": "g", "parallel": [run("m1"), run("m2")]}, run("c")))
    fail(flow, "m2", when=1, reason="Bad record.")

    steps = advance(flow, when=2)
    assert flow.status == "running", "m1 still runs"
    assert steps["m2"].status == "failed" and steps["g"].status == "running"

    succeed(flow, "m1", {"ok": True}, when=3)
    steps = advance(flow, when=4)

    assert flow.status == "failed"
    assert flow.error_message.startswith(
        "Step “m2” (in parallel group “g”) failed after 1 attempt: Bad record."
    )
    assert "Bad record." in flow.error_message
    assert flow.error_category == "invalid_input"
    assert (steps["g"].status, steps["m1"].status, steps["m1"].result) == (
        "failed",
        "succeeded",
        {"ok": True},
    )
    assert steps["c"].status == "skipped"


# --- Failing ------------------------------------------------------------------------------------


def test_a_failed_step_fails_the_flow_naming_it_and_skips_the_rest(make_flow):
    flow = start(make_flow(run("a"), run("b"), run("c")))
    succeed(flow, "a", None, when=1)
    advance(flow, when=2)
    fail(flow, "b", when=3, reason="The record is gone.")

    steps = advance(flow, when=4)

    assert flow.status == "failed"
    assert flow.error_category == "invalid_input"
    assert flow.error_message.startswith(
        # Not retried: the retries it had do not matter, and its own message says why.
        "Step “b” failed after 1 attempt: The record is gone. Conveyor does not retry this kind "
        "of error."
    )
    assert flow.error_detail == steps["b"].execution.error_detail != ""
    assert steps["c"].status == "skipped"
    assert steps["c"].note == "Skipped: an earlier step did not succeed."
    attempt = flow.attempts.get()
    assert (attempt.outcome, attempt.error_category) == ("failed", "invalid_input")


def test_a_missing_path_at_run_time_fails_the_flow_naming_the_reference(make_flow):
    flow = start(make_flow(run("a"), run("b", input={"x": "{{ steps.a.result.body.text }}"})))
    succeed(flow, "a", {"body": {}}, when=1)

    steps = advance(flow, when=2)

    assert flow.status == "failed"
    assert flow.error_category == "invalid_input"
    assert "{{ steps.a.result.body.text }}" in flow.error_message
    assert flow.error_message.startswith("Step “b” could not start: ")
    assert steps["b"].status == "failed" and steps["b"].execution is None
    assert steps["b"].note.startswith("Could not start: {{ steps.a.result.body.text }}")


def test_a_paused_step_agent_fails_the_flow_saying_so(make_flow, make_agent):
    sleeper = make_agent(name="sleeper")
    flow = start(make_flow(run("a"), run("b", "sleeper")))
    agent_pause(agent=sleeper)
    succeed(flow, "a", None, when=1)

    advance(flow, when=2)

    assert flow.status == "failed"
    assert flow.error_category == "configuration"
    assert "“sleeper” is paused" in flow.error_message
    assert flow.error_message.startswith("Step “b” could not start: ")


def test_a_step_input_its_agent_refuses_fails_the_flow_with_the_agents_words(make_flow, make_agent):
    make_agent(name="slow", config={"function": "demo.slow"})
    flow = start(make_flow(run("a", "slow", input={"seconds": "{{ input.s }}"})), {"s": "ten"})

    assert flow.status == "failed"
    assert flow.error_category == "invalid_input"
    assert "“seconds” must be a number" in flow.error_message


# --- Retry settings -------------------------------------------------------------------------------


def test_a_steps_retry_wins_over_the_flows_which_wins_over_the_agents(make_flow, make_agent):
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=5)
    flow = start(
        make_flow(
            {
                "key": "g",
                "parallel": [run("own", "flaky", retry={"max_retries": 0}), run("f", "flaky")],
            },
            retry={"max_retries": 2, "backoff": 1},
        )
    )

    own, inherited = child(flow, "own"), child(flow, "f")
    assert (own.retry_override, own.max_attempts) == ({"max_retries": 0}, 1)
    assert (inherited.retry_override, inherited.max_attempts) == (
        {"max_retries": 2, "backoff": 1},
        3,
    )

    # Without either, the step agent's own settings.
    plain = start(make_flow(run("x", "flaky")))
    assert (child(plain, "x").retry_override, child(plain, "x").max_attempts) == (None, 6)


def test_a_step_out_of_retries_fails_the_flow_saying_how_many_it_made(make_flow, make_agent):
    make_agent(name="flaky", config={"function": "demo.flaky"}, max_retries=0)
    flow = start(make_flow(run("a", "flaky"), retry={"max_retries": 1}))

    assert fail(flow, "a", when=1, category="network", retryable=True) is not None
    fail(flow, "a", when=3, category="network", retryable=True, reason="Still down.")
    advance(flow, when=4)

    assert flow.status == "failed"
    assert flow.error_category == "network"
    assert flow.error_message.startswith(
        "Step “a” failed after 2 attempts (1 retry allowed): Still down."
    )


# --- Stopping ------------------------------------------------------------------------------------


def test_cancelling_a_flow_cancels_its_running_step_and_skips_the_rest(make_flow):
    flow = start(make_flow(run("a"), {"key": "g", "parallel": [run("m1"), run("m2")]}, run("c")))
    succeed(flow, "a", None, when=1)
    advance(flow, when=2)
    succeed(flow, "m1", "done", when=3)
    claimed = child(flow, "m2")
    execution_claim(execution_id=claimed.pk, expected_attempt=0, worker="w", at=at(3))

    assert execution_cancel(execution=flow, by="alice", at=at(4))

    steps = steps_of(flow)
    flow.refresh_from_db()
    assert flow.status == "cancelled"
    assert flow.error_message == "This execution was cancelled by alice."
    assert steps["m2"].status == "cancelled"
    assert steps["m2"].execution.status == "cancelled"
    assert steps["m1"].status == "succeeded" and steps["m1"].result == "done"
    assert steps["g"].status == "cancelled"
    assert steps["c"].status == "skipped"
    assert steps["c"].note == "Skipped: the flow was cancelled."
    assert flow.attempts.get().outcome == "cancelled"

    # The step's end, told later, changes nothing.
    steps = advance(flow, when=5)
    assert flow.status == "cancelled" and steps["c"].status == "skipped"


def test_cancelling_a_waiting_flow_skips_the_wait(make_flow):
    flow = start(make_flow(run("a"), {"key": "w", "wait": {"seconds": 60}}, run("b")))
    succeed(flow, "a", None, when=1)
    advance(flow, when=2)

    execution_cancel(execution=flow, at=at(3))

    steps = steps_of(flow)
    assert (steps["w"].status, steps["b"].status) == ("skipped", "skipped")
    assert advance_stalled(at=at(100)) == 0


def test_a_flow_past_its_time_limit_fails_naming_the_running_step(make_flow):
    flow = start(make_flow(run("a"), run("b"), run("c"), timeout=60))
    succeed(flow, "a", None, when=1)
    advance(flow, when=2)

    assert advance_stalled(at=at(59)) == 0
    assert advance_stalled(at=at(61)) == 1

    flow.refresh_from_db()
    steps = steps_of(flow)
    assert flow.status == "failed"
    assert flow.error_category == "timeout"
    assert "time limit of 1 min" in flow.error_message
    assert "step “b” was still running" in flow.error_message
    assert (steps["a"].status, steps["b"].status, steps["c"].status) == (
        "succeeded",
        "cancelled",
        "skipped",
    )
    assert steps["b"].execution.status == "cancelled"
    assert flow.attempts.get().outcome == "failed"
    assert advance_stalled(at=at(62)) == 0


# --- Recovery -------------------------------------------------------------------------------------


def test_the_tick_advances_a_flow_whose_step_ended_without_telling_it(make_flow):
    flow = start(make_flow(run("a"), run("b")))
    succeed(flow, "a", None, when=1)  # its advance message is lost

    grace = ADVANCE_GRACE.total_seconds()
    assert advance_stalled(at=at(1 + grace - 1)) == 0, "its own message may still come"
    assert FlowStep.objects.get(flow=flow, key="b").status == "pending"

    assert advance_stalled(at=at(1 + grace + 1)) == 1
    assert FlowStep.objects.get(flow=flow, key="b").status == "running"
    assert Execution.objects.filter(parent=flow).count() == 2


def test_the_reaper_leaves_a_flow_alone_however_long_its_steps_or_waits_take(make_flow):
    """A flow's attempt runs no code, so it sends no heartbeat: it is never taken for lost."""
    flow = start(make_flow(run("a"), {"key": "w", "wait": {"seconds": 3600}}, run("b")))

    assert reap_lost_attempts(at=at(600)) == 0
    succeed(flow, "a", None, when=700)
    advance(flow, when=701)
    assert reap_lost_attempts(at=at(3000)) == 0

    flow.refresh_from_db()
    assert (flow.status, flow.wait_reason) == ("running", "pause")
    assert flow.attempts.get().finished_at is None


# --- Retrying a flow ------------------------------------------------------------------------------


def test_a_retried_flow_reuses_the_steps_that_succeeded_and_reruns_from_the_failed_one(
    make_flow,
):
    flow = start(make_flow(run("a"), run("b", input="{{ steps.a.result }}"), run("c")), {"n": 1})
    succeed(flow, "a", {"from": "a"}, when=1)
    advance(flow, when=2)
    fail(flow, "b", when=3)
    advance(flow, when=4)
    first_a = child(flow, "a")

    retry = execution_retry(execution=flow, input={"n": 2}, at=at(10))
    assert flow_start(execution_id=retry.pk, expected_attempt=0, worker="w", at=at(10))
    retry.refresh_from_db()

    steps = steps_of(retry)
    assert retry.retry_of == flow and retry.input == {"n": 2}
    assert steps["a"].status == "succeeded"
    assert (steps["a"].reused_from, steps["a"].execution, steps["a"].result) == (
        first_a,
        None,
        {"from": "a"},
    )
    assert steps["b"].status == "running"
    assert steps["b"].execution.input == {"from": "a"}
    assert Execution.objects.filter(parent=retry).count() == 1
    assert retry.progress_message == "Step 2 of 3: b"

    # A retry of the retry still points at the run that did the work.
    fail(retry, "b", when=11)
    advance(retry, when=12)
    again = execution_retry(execution=retry, at=at(20))
    flow_start(execution_id=again.pk, expected_attempt=0, worker="w", at=at(20))
    assert FlowStep.objects.get(flow=again, key="a").reused_from == first_a


def test_a_retried_flow_reruns_only_the_members_of_a_group_that_did_not_succeed(make_flow):
    flow = start(make_flow(run("a"), {"key": "g", "parallel": [run("m1"), run("m2")]}, run("c")))
    succeed(flow, "a", "A", when=1)
    advance(flow, when=2)
    succeed(flow, "m1", "one", when=3)
    fail(flow, "m2", when=3)
    advance(flow, when=4)
    assert flow.status == "failed"

    retry = execution_retry(execution=flow, at=at(10))
    flow_start(execution_id=retry.pk, expected_attempt=0, worker="w", at=at(10))

    steps = steps_of(retry)
    assert [(k, steps[k].status, steps[k].is_reused) for k in ("a", "g", "m1", "m2", "c")] == [
        ("a", "succeeded", True),
        ("g", "running", False),
        ("m1", "succeeded", True),
        ("m2", "running", False),
        ("c", "pending", False),
    ]
    assert list(Execution.objects.filter(parent=retry).values_list("step_key", flat=True)) == ["m2"]


def test_a_retried_flow_does_not_reuse_steps_after_one_it_reruns(make_flow):
    """A step after a rerun one may read its new result: it runs again too."""
    flow = start(make_flow({"key": "g", "parallel": [run("m1"), run("m2")]}, run("c")))
    succeed(flow, "m1", 1, when=1)
    succeed(flow, "m2", 2, when=1)
    advance(flow, when=2)
    execution_cancel(execution=child(flow, "c"), at=at(3))
    advance(flow, when=4)
    assert flow.status == "cancelled"
    assert flow.error_message == "Step “c” was cancelled, so the flow stopped."

    retry = execution_retry(execution=flow, at=at(10))
    flow_start(execution_id=retry.pk, expected_attempt=0, worker="w", at=at(10))

    steps = steps_of(retry)
    assert steps["g"].status == "succeeded" and steps["g"].result == {"m1": 1, "m2": 2}
    assert steps["c"].status == "running" and not steps["c"].is_reused


# --- Nesting ------------------------------------------------------------------------------------


def test_a_flow_run_as_a_step_advances_its_parent_when_it_ends(make_flow, make_agent):
    make_agent(name="inner", kind="flow", config={"steps": [run("x")]})
    outer = start(make_flow(run("sub", "inner"), run("after", input="{{ steps.sub.result }}")))
    inner = child(outer, "sub")
    assert flow_start(execution_id=inner.pk, expected_attempt=0, worker="w", at=at(1))

    succeed(inner, "x", {"deep": True}, when=2)
    advance(inner, when=3)
    assert inner.status == "succeeded"
    steps = advance(outer, when=4)

    assert steps["sub"].status == "succeeded"
    assert steps["after"].execution.input == {"deep": True}


def test_a_flow_started_deeper_than_the_limit_fails_saying_so(make_flow, make_agent, settings):
    make_agent(name="inner", kind="flow", config={"steps": [run("x")]})
    outer = start(make_flow(run("sub", "inner")))
    inner = child(outer, "sub")
    settings.CONVEYOR_FLOW_MAX_DEPTH = 1  # lowered since the flows were saved

    flow_start(execution_id=inner.pk, expected_attempt=0, worker="w", at=at(1))

    inner.refresh_from_db()
    assert inner.status == "failed"
    assert inner.error_category == "configuration"
    assert "flows nest at most 1 deep" in inner.error_message
    assert not Execution.objects.filter(parent=inner).exists()
