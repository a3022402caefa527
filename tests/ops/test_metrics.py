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


@pytest.mark.django_db
def test_each_queue_s_backlog_and_time_to_drain_are_the_dashboard_s(
    staff_client, make_agent, make_execution
):
    from datetime import timedelta

    from django.utils import timezone

    from ops import backlog

    busy, idle, stuck = (make_agent(queue=f"ops-q{i}") for i in (1, 2, 3))
    for _ in range(6):
        make_execution(busy, "queued", ago=timedelta(minutes=3))
    for _ in range(10):  # 11 in the last 10 minutes, 1 in the last 2: 0.5 a minute lately
        make_execution(busy, "succeeded", ago=timedelta(minutes=5), seconds=1)
    make_execution(busy, "succeeded", ago=timedelta(minutes=1), seconds=1)
    make_execution(busy, "running", ago=timedelta(seconds=10))
    make_execution(stuck, "queued", ago=timedelta(minutes=1))
    # Runs finished a while ago and none lately: not draining either.
    lately = make_agent(queue="ops-q4")
    make_execution(lately, "queued", ago=timedelta(minutes=1))
    make_execution(lately, "succeeded", ago=timedelta(minutes=6), seconds=1)
    make_execution(idle, "succeeded", ago=timedelta(minutes=2), waited=2.5, seconds=1)

    m = samples(staff_client.get("/metrics"))

    assert m[key("conveyor_queue_backlog", queue="ops-q1")] == 6
    assert m[key("conveyor_queue_running", queue="ops-q1")] == 1
    assert m[key("conveyor_queue_oldest_age_seconds", queue="ops-q1")] == pytest.approx(180, abs=5)
    # The slower of the two rates: 1 in 2 minutes (not 11 in 10); 6 wait: 12 minutes to drain.
    assert m[key("conveyor_queue_finished_per_second", queue="ops-q1")] == pytest.approx(1 / 120)
    assert m[key("conveyor_queue_drain_seconds", queue="ops-q1")] == pytest.approx(12 * 60)
    # Nothing waits: 0; runs wait and none finished lately: +Inf.
    assert m[key("conveyor_queue_drain_seconds", queue="ops-q2")] == 0
    assert m[key("conveyor_queue_oldest_age_seconds", queue="ops-q2")] == 0
    assert m[key("conveyor_queue_drain_seconds", queue="ops-q3")] == float("inf")
    assert m[key("conveyor_queue_drain_seconds", queue="ops-q4")] == float("inf")
    # The same rule as the dashboard's.
    shown = {r.queue: r.drain.seconds for r in backlog.queue_backlog(now=timezone.now())}
    assert shown["ops-q1"] == pytest.approx(m[key("conveyor_queue_drain_seconds", queue="ops-q1")])


@pytest.mark.django_db
def test_the_start_latency_histogram_counts_every_run_that_started(
    staff_client, make_agent, make_execution
):
    from datetime import timedelta

    from django.utils import timezone

    from ops.rollups import roll_up

    agent = make_agent()
    make_execution(agent, "succeeded", ago=timedelta(hours=3), waited=0.02)  # rolled up
    make_execution(agent, "failed", ago=timedelta(hours=3), waited=7)  # rolled up
    make_execution(agent, "succeeded", ago=timedelta(seconds=30), waited=0.3)  # raw
    make_execution(agent, "running", ago=timedelta(seconds=20), waited=70)  # raw
    make_execution(agent, "queued", ago=timedelta(seconds=10))  # not started
    roll_up(until=timezone.now())

    m = samples(staff_client.get("/metrics"))

    name = "conveyor_execution_start_latency_seconds"
    assert m[key(f"{name}_count")] == 4
    assert m[key(f"{name}_sum")] == pytest.approx(0.02 + 7 + 0.3 + 70, rel=0.01)
    assert m[key(f"{name}_bucket", le="0.01")] == 0
    assert m[key(f"{name}_bucket", le="0.025")] == 1
    assert m[key(f"{name}_bucket", le="0.5")] == 2
    assert m[key(f"{name}_bucket", le="10.0")] == 3
    assert m[key(f"{name}_bucket", le="60.0")] == 3
    assert m[key(f"{name}_bucket", le="300.0")] == 4
    assert m[key(f"{name}_bucket", le="+Inf")] == 4
