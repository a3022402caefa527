"""End to end through a real worker process, Redis and the database."""

import pytest

from executions.models import Execution
from executions.services import execution_create
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def test_a_flaky_agent_succeeds_on_its_third_attempt(worker, make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=3)
    execution = execution_create(agent=agent, trigger="manual", input={"fail_times": 2})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded"
    assert execution.attempt == 3
    assert execution.result == {"succeeded_on_attempt": 3}
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued", "running", "retrying", "running", "retrying", "running", "succeeded",
    ]
