"""The Celery tasks' own behaviour, their bodies run in this process with ``Task.apply``."""

import pytest

from executions.models import Execution
from executions.services import execution_request
from executions.tasks import ExecutionFailed, dispatch_tick, run_execution

pytestmark = pytest.mark.django_db


def test_a_run_that_fails_for_good_leaves_its_task_failed_with_the_owners_words(make_agent):
    agent = make_agent(config={"function": "demo.broken"})
    execution = execution_request(agent=agent, trigger="api")

    outcome = run_execution.apply(args=[execution.pk], retries=0)

    execution.refresh_from_db()
    assert execution.status == Execution.Status.FAILED
    assert outcome.state == "FAILURE" and isinstance(outcome.result, ExecutionFailed)
    assert str(outcome.result) == f"{execution.error_title}: {execution.error_message}"
    # An expected outcome: the worker logs it without a traceback.
    assert ExecutionFailed in run_execution.throws


def test_a_run_that_succeeds_leaves_its_task_succeeded(make_agent):
    execution = execution_request(agent=make_agent(), trigger="api", input={"x": 1})

    outcome = run_execution.apply(args=[execution.pk], retries=0)

    assert outcome.state == "SUCCESS"
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED


def test_a_duplicate_message_for_a_finished_run_does_nothing_and_is_not_a_failure(make_agent):
    agent = make_agent(config={"function": "demo.broken"})
    execution = execution_request(agent=agent, trigger="api")
    run_execution.apply(args=[execution.pk], retries=0)

    assert run_execution.apply(args=[execution.pk], retries=0).state == "SUCCESS"


def test_the_dispatcher_tick_sends_no_task_events_so_monitors_list_agent_runs():
    assert dispatch_tick.send_events is False
    assert run_execution.send_events is True
