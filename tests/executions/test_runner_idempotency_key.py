"""ctx.idempotency_key: one per execution, the same on every attempt, new for a manual retry.

The task body (runner.run_attempt) is called in this process; demo.flaky logs the key it is
given on every attempt. Through the real worker: test_runner_idempotency_key_e2e.py.
"""

import pytest
from django.utils import timezone

from executions import runner
from executions.services import execution_claim, execution_request, execution_retry

pytestmark = pytest.mark.django_db


def keys_logged(execution):
    """(attempt, key) for each of demo.flaky's log lines, in order."""
    return [
        (log.attempt, log.data["idempotency_key"])
        for log in execution.logs.order_by("pk")
        if "idempotency_key" in log.data
    ]


def test_the_key_names_the_execution(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    claimed, _ = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="", at=timezone.now()
    )

    ctx = runner.ExecutionContext(execution=claimed, agent=claimed.agent, deadline=timezone.now())

    assert ctx.idempotency_key == f"conveyor-{execution.uuid}"


def test_every_attempt_of_an_execution_sees_the_same_key(make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=2)
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 2})

    for attempt in range(3):
        runner.run_attempt(execution_id=execution.pk, expected_attempt=attempt)

    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.attempt == 3
    key = f"conveyor-{execution.uuid}"
    assert keys_logged(execution) == [(1, key), (2, key), (3, key)]


def test_another_execution_of_the_same_agent_sees_another_key(make_agent):
    agent = make_agent(config={"function": "demo.flaky"})
    first = execution_request(agent=agent, trigger="manual", input={"fail_times": 0})
    second = execution_request(agent=agent, trigger="manual", input={"fail_times": 0})

    for execution in (first, second):
        runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    [(_, first_key)] = keys_logged(first)
    [(_, second_key)] = keys_logged(second)
    assert first_key != second_key


def test_a_manual_retry_is_a_new_execution_with_a_new_key(make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=0)
    failed = execution_request(agent=agent, trigger="manual", input={"fail_times": 1})
    runner.run_attempt(execution_id=failed.pk, expected_attempt=0)
    failed.refresh_from_db()
    assert failed.status == "failed"

    retry = execution_retry(execution=failed, input={"fail_times": 0})
    runner.run_attempt(execution_id=retry.pk, expected_attempt=0)

    assert keys_logged(failed) == [(1, f"conveyor-{failed.uuid}")]
    assert keys_logged(retry) == [(1, f"conveyor-{retry.uuid}")]
