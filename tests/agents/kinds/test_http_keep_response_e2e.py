"""The http kind's keep_response end to end: a real worker calls the local HTTP server and
keeps the answer as the run's file, which its owner downloads."""

import pytest
from django.urls import reverse

from executions.services import execution_request
from tests.agents.conftest import local_url
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("allow_local")


def test_an_http_agent_keeps_the_answer_as_a_file(worker, make_agent, httpserver, alice_client):
    body = "id,total\n" + "".join(f"{i},{i * 3}\n" for i in range(2000))
    httpserver.expect_request("/export", method="GET").respond_with_data(
        body, content_type="text/csv; charset=utf-8"
    )
    agent = make_agent(
        kind="http",
        config={
            "url": local_url(httpserver, "/export"),
            "method": "GET",
            "body": "none",
            "keep_response": True,
        },
    )
    execution = execution_request(agent=agent, trigger="manual")

    execution = wait_for(execution, "succeeded", "failed")

    assert execution.status == "succeeded", execution.error_message
    kept = execution.artifacts.get()
    assert (kept.name, kept.content_type) == ("response", "text/csv; charset=utf-8")
    response = alice_client.get(reverse("artifacts:download", args=[execution.uuid, kept.uuid]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == body.encode()
