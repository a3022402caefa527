"""POST /api/v1/agents/{id}/runs: 202 with the execution, the kind's input check first,
delayed runs, Idempotency-Key replays and conflicts."""

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import Execution
from executions.services import execution_cancel, execution_request
from tests.conftest import error_of

pytestmark = pytest.mark.django_db


def runs(agent):
    return f"/api/v1/agents/{agent.uuid}/runs"


def test_a_run_is_accepted_with_the_execution_and_its_location(api, make_agent, alice):
    agent = make_agent(alice)
    response = api.post(runs(agent), {"input": {"hello": "world"}})
    assert response.status_code == 202, response.content
    body = response.json()
    execution = Execution.objects.get(uuid=body["id"])
    assert (execution.agent, execution.trigger, execution.input) == (
        agent, "api", {"hello": "world"},
    )  # fmt: skip
    assert body["status"] == "queued" and body["status_label"] == "Queued"
    assert response["Location"] == body["url"]
    assert body["url"] == f"http://testserver/api/v1/executions/{execution.uuid}"
    assert execution.not_before is None


def test_a_run_without_a_body_has_no_input(api, make_agent, alice):
    response = api.client.generic("POST", runs(make_agent(alice)))  # no body, no type
    assert response.status_code == 202
    assert Execution.objects.get(uuid=response.json()["id"]).input is None


def test_the_kinds_input_check_runs_first_and_queues_nothing(api, make_agent, alice):
    agent = make_agent(alice, config={"function": "demo.slow"})
    response = api.post(runs(agent), {"input": {"seconds": "ten"}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert "“seconds” must be a number" in error["details"]["input"][0]
    assert not Execution.objects.exists()


def test_run_at_and_delay_seconds_set_when_it_may_start(api, make_agent, alice):
    agent = make_agent(alice)
    run_at = timezone.now() + timedelta(hours=2)
    body = api.post(runs(agent), {"input": 1, "run_at": run_at.isoformat()}).json()
    assert Execution.objects.get(uuid=body["id"]).not_before == run_at
    assert body["not_before"] is not None
    before = timezone.now()
    body = api.post(runs(agent), {"delay_seconds": 600}).json()
    not_before = Execution.objects.get(uuid=body["id"]).not_before
    assert before + timedelta(seconds=600) <= not_before <= timezone.now() + timedelta(seconds=600)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"run_at": "tomorrow"}, "run_at"),
        ({"delay_seconds": -1}, "delay_seconds"),
        ({"delay_seconds": 10**12}, "delay_seconds"),
        ({"delay_seconds": "soon"}, "delay_seconds"),
        ({"run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}, "run_at"),
        (["input"], "non_field_errors"),
        ("just a string", "non_field_errors"),
    ],
)
def test_bad_timing_or_shape_is_a_422_naming_it(api, make_agent, alice, body, field):
    response = api.post(runs(make_agent(alice)), body)
    assert response.status_code == 422, response.content
    assert field in error_of(response)["details"]
    assert not Execution.objects.exists()


def test_the_same_idempotency_key_and_body_return_the_same_execution(api, make_agent, alice):
    agent = make_agent(alice)
    headers = {"Idempotency-Key": "order-42"}
    first = api.post(runs(agent), {"input": {"order": 42}}, headers=headers)
    again = api.post(runs(agent), {"input": {"order": 42}}, headers=headers)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert again["Location"] == first["Location"]
    assert Execution.objects.count() == 1


def test_the_same_idempotency_key_with_another_body_is_a_409(api, make_agent, alice):
    agent = make_agent(alice)
    headers = {"Idempotency-Key": "order-42"}
    api.post(runs(agent), {"input": {"order": 42}}, headers=headers)
    response = api.post(runs(agent), {"input": {"order": 43}}, headers=headers)
    assert response.status_code == 409
    assert error_of(response)["code"] == "idempotency_key_reused"
    assert Execution.objects.count() == 1


def test_idempotency_keys_are_per_agent(api, make_agent, alice):
    headers = {"Idempotency-Key": "k"}
    one = api.post(runs(make_agent(alice)), {"input": 1}, headers=headers).json()
    two = api.post(runs(make_agent(alice)), {"input": 1}, headers=headers).json()
    assert one["id"] != two["id"]


@pytest.mark.parametrize("key", ["x" * 201, "tab\there", "caf\u00e9"])
def test_a_malformed_idempotency_key_is_a_400(api, make_agent, alice, key):
    response = api.client.post(
        runs(make_agent(alice)),
        data=b"{}",
        content_type="application/json",
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_idempotency_key"


def test_a_paused_agent_is_a_409(api, make_agent, alice):
    agent = make_agent(alice, is_paused=True)
    response = api.post(runs(agent), {"input": 1})
    assert response.status_code == 409
    assert "paused" in error_of(response)["message"]


@pytest.mark.parametrize("path", ["runs", "retry"])
def test_a_body_without_the_input_envelope_is_a_422_that_says_so(api, make_agent, alice, path):
    agent = make_agent(alice)
    if path == "runs":
        url = f"/api/v1/agents/{agent.uuid}/runs"
    else:
        failed = execution_request(agent=agent, trigger="api", input={"n": 1})
        execution_cancel(execution=failed)
        url = f"/api/v1/executions/{failed.uuid}/retry"
    before = Execution.objects.count()

    response = api.post(url, {"fail_times": 1})

    assert response.status_code == 422, response.content
    details = response.json()["error"]["details"]
    assert 'under "input"' in details["fail_times"][0]
    assert Execution.objects.count() == before
