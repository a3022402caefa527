"""The http kind end to end: a real worker process calls the real local HTTP server.

The worker runs with CONVEYOR_OUTBOUND_ALLOW=127.0.0.1 (tests/conftest.py), so URLs written
with 127.0.0.1 pass the guard and anything else internal does not.
"""

from datetime import timedelta

import pytest
from werkzeug import Response

from executions.services import execution_request
from tests.agents.conftest import local_url
from tests.conftest import wait_for

# The agents are saved in this process, which checks their address too: allow what the worker
# allows.
pytestmark = pytest.mark.usefixtures("allow_local")


def test_a_200_answer_succeeds_with_the_status_in_the_result(worker, make_agent, httpserver):
    httpserver.expect_request("/hook", method="POST", json={"order": 7}).respond_with_json(
        {"accepted": True}
    )
    agent = make_agent(kind="http", config={"url": local_url(httpserver, "/hook")})
    execution = execution_request(agent=agent, trigger="manual", input={"order": 7})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    assert execution.attempt == 1
    assert execution.result["status"] == 200
    assert execution.result["body"] == {"accepted": True}


def test_a_503_then_a_200_retries_and_succeeds(worker, make_agent, httpserver):
    httpserver.expect_oneshot_request("/flaky").respond_with_data("down", status=503)
    httpserver.expect_request("/flaky").respond_with_data("up")
    agent = make_agent(kind="http", config={"url": local_url(httpserver, "/flaky")}, max_retries=3)
    execution = execution_request(agent=agent, trigger="manual", input={})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    assert execution.attempt == 2
    first = execution.attempts.get(number=1)
    assert (first.outcome, first.error_category) == ("failed", "upstream_error")
    assert "503 Service Unavailable" in first.error_message


def test_a_404_fails_for_good_after_one_attempt(worker, make_agent, httpserver):
    httpserver.expect_request("/gone").respond_with_data("not here", status=404)
    agent = make_agent(kind="http", config={"url": local_url(httpserver, "/gone")}, max_retries=3)
    execution = execution_request(agent=agent, trigger="manual", input={})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "failed"
    assert execution.attempt == 1
    assert execution.error_category == "upstream_error"
    assert execution.error_message.startswith("The endpoint answered 404 Not Found.")
    assert len(httpserver.log) == 1


def test_a_429_with_retry_after_waits_that_long_before_the_next_attempt(
    worker, make_agent, httpserver
):
    httpserver.expect_oneshot_request("/busy").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "2"}
    )
    httpserver.expect_request("/busy").respond_with_data("ok")
    # The agent's own backoff (1 s) is shorter, so only Retry-After can explain a 2 s wait.
    agent = make_agent(
        kind="http", config={"url": local_url(httpserver, "/busy")}, max_retries=3, retry_backoff=1
    )
    execution = execution_request(agent=agent, trigger="manual", input={})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    first, second = execution.attempts.order_by("number")
    assert first.error_category == "rate_limited"
    assert second.started_at - first.finished_at >= timedelta(seconds=2)


def test_a_redirect_to_a_disallowed_host_fails_as_a_configuration_problem(
    worker, make_agent, httpserver
):
    inside = local_url(httpserver, "/inside", host="localhost")
    httpserver.expect_request("/hook").respond_with_response(
        Response(status=302, headers={"Location": inside})
    )
    httpserver.expect_request("/inside").respond_with_data("internal")
    agent = make_agent(kind="http", config={"url": local_url(httpserver, "/hook")}, max_retries=3)
    execution = execution_request(agent=agent, trigger="manual", input={})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "failed"
    assert execution.attempt == 1
    assert execution.error_category == "configuration"
    assert "CONVEYOR_OUTBOUND_ALLOW" in execution.error_message
    assert [request.path for request, _ in httpserver.log] == ["/hook"]
