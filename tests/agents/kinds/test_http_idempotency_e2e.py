"""The Idempotency-Key option end to end: the real worker calls the real local HTTP server and
sends one key per execution, on every attempt, and a new one for a manual retry."""

import time

import pytest
from werkzeug import Response

from executions.services import execution_request, execution_retry
from tests.agents.conftest import local_url
from tests.conftest import wait_for

# The agents are saved in this process, which checks their address too: allow what the worker
# allows.
pytestmark = pytest.mark.usefixtures("allow_local")


def sent_keys(server, path):
    return [r.headers.get("Idempotency-Key") for r, _ in server.log if r.path == path]


def payments_agent(make_agent, server, *, timeout=None, **fields):
    config = {"url": local_url(server, "/charge"), "send_idempotency_key": True}
    if timeout is not None:
        config["timeout"] = timeout  # the request timeout, per HTTP call
    return make_agent(kind="http", config=config, **fields)


def test_a_failed_attempt_and_its_retry_send_the_same_key(worker, make_agent, httpserver):
    httpserver.expect_oneshot_request("/charge").respond_with_data("busy", status=503)
    httpserver.expect_request("/charge").respond_with_json({"charged": True})
    agent = payments_agent(make_agent, httpserver, max_retries=2)
    execution = execution_request(agent=agent, trigger="manual", input={"amount": 5})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    assert execution.attempt == 2
    assert sent_keys(httpserver, "/charge") == [f"conveyor-{execution.uuid}"] * 2


def test_an_attempt_cut_off_after_its_request_arrived_is_repeated_with_the_same_key(
    worker, make_agent, httpserver
):
    # The first request arrives (the charge is made) but the answer comes too late: the attempt
    # times out and the next one sends the request again. The key lets the service see that.
    received = []

    def charge(request):
        received.append(request.headers.get("Idempotency-Key"))
        if len(received) == 1:
            time.sleep(0.8)  # longer than the agent's request timeout
        return Response('{"charged": true}', content_type="application/json")

    httpserver.expect_request("/charge").respond_with_handler(charge)
    agent = payments_agent(make_agent, httpserver, timeout=0.3, max_retries=2, retry_backoff=1)
    execution = execution_request(agent=agent, trigger="manual", input={"amount": 5})

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    first = execution.attempts.get(number=1)
    assert first.error_category == "timeout"
    # Every attempt sent the same key. The retry's wait is jittered (anywhere up to its
    # backoff), so the second request can arrive while the test server still sleeps on the
    # first, time out too, and a third attempt make the charge: two or three requests.
    assert len(received) == execution.attempt in (2, 3)
    assert set(received) == {f"conveyor-{execution.uuid}"}


def test_a_manual_retry_sends_a_new_key(worker, make_agent, httpserver):
    httpserver.expect_oneshot_request("/charge").respond_with_data("busy", status=503)
    httpserver.expect_request("/charge").respond_with_json({"charged": True})
    agent = payments_agent(make_agent, httpserver, max_retries=0)
    failed = wait_for(execution_request(agent=agent, trigger="manual", input={}), "failed")

    retry = wait_for(execution_retry(execution=failed), "succeeded", "failed")

    assert retry.status == "succeeded", retry.error_message
    assert sent_keys(httpserver, "/charge") == [f"conveyor-{failed.uuid}", f"conveyor-{retry.uuid}"]
