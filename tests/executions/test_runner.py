"""The task body (runner.run_attempt) called directly in the test process."""

import pytest
from django.utils import timezone

from agents.functions import agent_function
from executions import runner
from executions.models import Execution
from executions.services import (
    attempt_succeed,
    execution_cancel,
    execution_claim,
    execution_request,
)

pytestmark = pytest.mark.django_db


def test_it_runs_an_attempt_to_success(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual", input={"x": [1, 2]})

    decision = runner.run_attempt(execution_id=execution.pk, expected_attempt=0, worker="w1")

    execution.refresh_from_db()
    assert decision == runner.NOTHING
    assert execution.status == "succeeded" and execution.result == {"x": [1, 2]}
    assert execution.progress == 100 and execution.duration is not None
    attempt = execution.attempts.get()
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, "succeeded", "w1")
    assert list(execution.logs.values_list("message", flat=True)) == ["Echoing the input back."]


def test_a_retryable_failure_asks_the_task_to_retry_with_the_policys_wait(make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=2, retry_backoff=7)
    execution = execution_request(agent=agent, trigger="manual")

    decision = runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    execution.refresh_from_db()
    assert decision == runner.Decision(retry_in=7, max_retries=2)
    assert execution.status == "retrying"
    assert execution.status_label == "Retrying (attempt 2 of 3)"
    assert "will try again after a 7 s wait (attempt 2 of 3)" in execution.error_message
    assert execution.next_attempt_at > timezone.now()
    assert execution.attempts.get().retry_delay == 7


def test_a_message_for_another_attempt_does_nothing(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")

    assert runner.run_attempt(execution_id=execution.pk, expected_attempt=1) == runner.NOTHING

    execution.refresh_from_db()
    assert execution.status == "queued" and execution.attempts.count() == 0


def test_the_failed_attempts_message_handed_back_sends_the_lost_retry_again(make_agent):
    # The process killed after attempt 1's failure committed and before Task.retry published
    # the retry: the broker hands back the message of attempt 1, which sends the retry again.
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=2, retry_backoff=7)
    execution = execution_request(agent=agent, trigger="manual")
    first = runner.run_attempt(execution_id=execution.pk, expected_attempt=0)
    assert first == runner.Decision(retry_in=7, max_retries=2)

    again = runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    assert again.max_retries == 2 and 5 <= again.retry_in <= 7  # what is left of the wait
    execution.refresh_from_db()
    assert (execution.status, execution.attempts.count()) == ("retrying", 1)
    # The retry's message runs attempt 2 (which fails again: 14 s); a copy older than the
    # latest failed attempt's sends nothing.
    assert runner.run_attempt(execution_id=execution.pk, expected_attempt=1).retry_in == 14
    assert runner.run_attempt(execution_id=execution.pk, expected_attempt=0) == runner.NOTHING
    assert execution.attempts.count() == 2


def test_a_message_for_a_finished_or_missing_execution_does_nothing(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    assert runner.run_attempt(execution_id=execution.pk, expected_attempt=0) == runner.NOTHING
    assert runner.run_attempt(execution_id=10**9, expected_attempt=0) == runner.NOTHING
    assert execution.attempts.count() == 1


def test_a_result_that_is_not_json_is_an_internal_error(make_agent):
    # Registered in this process only: the runner runs here, not in the worker.
    @agent_function("tests.returns_a_set")
    def returns_a_set(ctx, input):
        return {1, 2}

    agent = make_agent(config={"function": "tests.returns_a_set"})
    execution = execution_request(agent=agent, trigger="manual")

    runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    execution.refresh_from_db()
    assert execution.status == "failed" and execution.error_category == "internal"
    assert "not JSON" in execution.error_message


def test_an_unknown_function_fails_as_a_configuration_problem(make_agent):
    agent = make_agent()
    # A function registered when the agent was saved and gone since: agent_update would refuse
    # this config, so it is written as a deploy that removed the function leaves it.
    agent.__class__.objects.filter(pk=agent.pk).update(config={"function": "gone.away"})
    execution = execution_request(agent=agent, trigger="manual")

    runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    execution.refresh_from_db()
    assert execution.status == "failed" and execution.error_category == "configuration"
    assert "gone.away" in execution.error_message
    assert execution.error_title == "The agent's settings do not work"


def test_a_result_arriving_after_a_cancel_is_discarded(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual", input={"x": 1})
    claimed, attempt = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="", at=timezone.now()
    )
    execution_cancel(execution=Execution.objects.get(pk=execution.pk))

    assert not attempt_succeed(
        execution=claimed, attempt=attempt, result={"x": 1}, at=timezone.now()
    )

    execution.refresh_from_db()
    attempt.refresh_from_db()
    assert execution.status == "cancelled" and execution.result is None
    assert attempt.outcome == "cancelled"


def test_the_context_masks_secrets_in_logs_and_results(make_agent):
    agent = make_agent(secrets={"token": "tok-123456"})
    execution = execution_request(agent=agent, trigger="manual")
    claimed, _ = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="", at=timezone.now()
    )
    ctx = runner.ExecutionContext(execution=claimed, agent=claimed.agent, deadline=timezone.now())

    ctx.log("info", "calling with tok-123456", header="Bearer tok-123456")
    ctx.flush()

    log = execution.logs.get()
    assert log.message == "calling with ***" and log.data == {"header": "Bearer ***"}
    assert ctx.scrub_json({"tok-123456": ["x tok-123456"]}) == {"***": ["x ***"]}
    assert ctx.secrets["token"] == "tok-123456"
    assert "tok-123456" not in repr(ctx.secrets)


def test_progress_is_written_while_running_and_ignored_once_cancelled(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    claimed, _ = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="", at=timezone.now()
    )
    ctx = runner.ExecutionContext(execution=claimed, agent=claimed.agent, deadline=timezone.now())

    ctx.progress(40, "Halfway there")
    execution.refresh_from_db()
    assert (execution.progress, execution.progress_message) == (40, "Halfway there")
    assert not ctx.is_cancelled(force=True)

    execution_cancel(execution=execution)
    ctx.progress(100, "Done")
    execution.refresh_from_db()
    assert execution.progress == 40
    assert ctx.is_cancelled()
