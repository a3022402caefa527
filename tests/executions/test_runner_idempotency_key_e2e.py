"""ctx.idempotency_key through the real worker: a function agent sees the same key on a failed
attempt and on its retry (demo.flaky logs the key it is given)."""

from executions.services import execution_request
from tests.conftest import wait_for


def test_a_function_agent_sees_one_key_on_every_attempt(worker, make_agent):
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=2, retry_backoff=1)
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 1})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    logged = [
        (log.attempt, log.data.get("idempotency_key"))
        for log in execution.logs.order_by("pk")
        if log.message.startswith(("Simulating", "Succeeded"))
    ]
    key = f"conveyor-{execution.uuid}"
    assert logged == [(1, key), (2, key)]
