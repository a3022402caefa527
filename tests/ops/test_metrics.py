"""/metrics: Prometheus text built from the database and the broker at each scrape, for staff or
a bearer token only."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from executions.services import execution_request
from tests.conftest import wait_for

TOKEN = "metrics-token-for-tests-0123456789"


def key(name: str, **labels) -> tuple:
    return (name, tuple(sorted(labels.items())))


def samples(response) -> dict[tuple, float]:
    """{key(sample name, **labels): value} of a /metrics response."""
    assert response["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            found[key(s.name, **s.labels)] = s.value
    return found


def test_it_reflects_executions_that_just_ran_on_a_real_worker(
    worker, client, make_agent, settings
):
    settings.CONVEYOR_METRICS_TOKEN = TOKEN
    echo = make_agent(name="echo")
    flaky = make_agent(name="flaky", config={"function": "demo.flaky"})
    broken = make_agent(name="broken", config={"function": "demo.broken"})
    runs = [
        execution_request(agent=echo, trigger="api", input={"n": 1}),
        execution_request(agent=echo, trigger="api", input={"n": 2}),
        execution_request(agent=flaky, trigger="api", input={"fail_times": 1}),
        execution_request(agent=broken, trigger="api"),
    ]
    for run in runs:
        wait_for(run, "succeeded", "failed")

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    m = samples(response)
    assert m[key("conveyor_executions", status="succeeded", error_category="")] == 3
    assert m[key("conveyor_executions", status="failed", error_category="invalid_input")] == 1
    assert m[key("conveyor_execution_attempts_total")] == 5  # flaky needed two
    assert m[key("conveyor_execution_retries_total")] == 1
    assert m[key("conveyor_executions_running")] == 0
    echo_labels = {"agent": "echo", "agent_uuid": str(echo.uuid), "owner": "alice"}
    assert m[key("conveyor_execution_duration_seconds_count", **echo_labels)] == 2
    assert m[key("conveyor_execution_duration_seconds_bucket", **echo_labels, le="+Inf")] == 2
    assert m[key("conveyor_execution_duration_seconds_sum", **echo_labels)] > 0
    assert m[key("conveyor_broker_up")] == 1
    assert m[key("conveyor_queue_depth", queue=settings.CONVEYOR_EXECUTIONS_QUEUE)] == 0


@pytest.mark.django_db
def test_histogram_buckets_are_cumulative(staff_client, make_agent, make_execution):
    agent = make_agent(name="timed")
    for seconds in (0.05, 0.3, 0.3, 4, 200):
        make_execution(agent, "succeeded", seconds=seconds)

    m = samples(staff_client.get("/metrics"))

    labels = {"agent": "timed", "agent_uuid": str(agent.uuid), "owner": "alice"}
    bucket = {
        le: m[key("conveyor_execution_duration_seconds_bucket", **labels, le=le)]
        for le in ("0.1", "0.5", "5.0", "300.0", "+Inf")
    }
    assert bucket == {"0.1": 1, "0.5": 3, "5.0": 4, "300.0": 5, "+Inf": 5}
    assert m[key("conveyor_execution_duration_seconds_sum", **labels)] == pytest.approx(204.65)


@pytest.mark.django_db
def test_anonymous_callers_get_a_401(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_a_wrong_token_gets_a_401(client, settings):
    settings.CONVEYOR_METRICS_TOKEN = TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


@pytest.mark.django_db
def test_without_a_configured_token_no_token_is_accepted(client, settings):
    settings.CONVEYOR_METRICS_TOKEN = None
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer None").status_code == 401


@pytest.mark.django_db
def test_a_signed_in_user_who_is_not_staff_gets_a_403(alice_client):
    assert alice_client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_staff_can_read_it_in_the_browser(staff_client):
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert "conveyor_executions_running 0.0" in response.content.decode()
