"""GET /api/v1/executions/{id}/compare/{other}: two runs side by side, as the compare page."""

from datetime import timedelta

import pytest

from agents.services import agent_update
from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


def url(execution, other):
    return f"/api/v1/executions/{execution.uuid}/compare/{other}"


def test_it_returns_the_configuration_and_input_differences(api, make_agent, make_execution):
    agent = make_agent(timeout=30)
    before = make_execution(agent, ago=timedelta(days=1), input={"city": "Oslo"}, result=None)
    agent_update(agent=agent, timeout=5, secrets={"TOKEN": "never-shown"})
    after = make_execution(agent, "failed", input={"city": "Bergen"}, error_category="auth")

    response = api.get(url(after, before.uuid))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["same_agent"] is True
    assert body["before"]["id"] == str(before.uuid)
    assert body["after"]["id"] == str(after.uuid)
    config = body["configuration"]
    assert config["changed"] is True
    assert config["before_version"] == 1
    assert config["after_version"] == after.agent_version
    assert {"path": "timeout", "change": "changed", "old": 30, "new": 5} in config["diff"][
        "changes"
    ]
    assert {"path": "secrets[0]", "change": "added", "new": "TOKEN"} in config["diff"]["changes"]
    assert "never-shown" not in response.content.decode()
    assert body["input"]["changes"] == [
        {"path": "city", "change": "changed", "old": "Oslo", "new": "Bergen"}
    ]
    assert body["after"]["error"]["category"] == "auth"
    assert body["after"]["attempts"][0]["outcome"] == "failed"
    assert body["after"]["timings"]["total"] is not None


def test_previous_and_last_success_are_accepted(api, make_agent, make_execution):
    agent = make_agent()
    success = make_execution(agent, ago=timedelta(hours=2))
    failed = make_execution(agent, "failed", ago=timedelta(hours=1))
    assert api.get(url(failed, "previous")).json()["before"]["id"] == str(success.uuid)
    assert api.get(url(failed, "last-success")).json()["before"]["id"] == str(success.uuid)
    response = api.get(url(success, "previous"))
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "This agent has no run before this one."


def test_another_users_run_is_not_found(api, bob, make_token, make_agent, make_execution):
    mine = make_execution(make_agent())
    theirs = make_execution(make_agent(owner=bob, name="bobs"))
    assert api.get(url(mine, theirs.uuid)).status_code == 404
    assert api.get(url(theirs, mine.uuid)).status_code == 404
    bobs_api = ApiClient(make_token(bob))
    assert bobs_api.get(url(theirs, mine.uuid)).status_code == 404


def test_what_is_not_a_run_is_a_400_that_says_so(api, make_agent, make_execution):
    execution = make_execution(make_agent())
    response = api.get(url(execution, "yesterday"))
    assert response.status_code == 400
    assert "is not a run's id or address" in response.json()["error"]["message"]
