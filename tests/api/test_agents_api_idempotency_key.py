"""The http kind's Idempotency-Key option through the API: set, shown, refused in words."""

import pytest

from agents.models import Agent
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"
URL = "https://example.com/charge"


def create(api, config, name="payments"):
    return api.post(AGENTS, {"name": name, "kind": "http", "config": {"url": URL, **config}})


def test_an_agent_created_with_the_option_shows_it_in_its_config(api):
    response = create(api, {"send_idempotency_key": True})

    assert response.status_code == 201, response.content
    assert response.json()["config"]["send_idempotency_key"] is True
    agent = Agent.objects.get(name="payments")
    assert api.get(f"{AGENTS}/{agent.uuid}").json()["config"]["send_idempotency_key"] is True


def test_left_out_it_is_off_and_says_so(api):
    response = create(api, {})

    assert response.status_code == 201, response.content
    assert response.json()["config"]["send_idempotency_key"] is False


def test_a_patch_turns_it_off(api, make_agent):
    agent = make_agent(kind="http", config={"url": URL, "send_idempotency_key": True})

    response = api.patch(
        f"{AGENTS}/{agent.uuid}", {"config": {"url": URL, "send_idempotency_key": False}}
    )

    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert agent.config["send_idempotency_key"] is False


def test_a_value_that_is_not_a_boolean_is_a_422_on_the_field(api):
    response = create(api, {"send_idempotency_key": "no"})

    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "config.send_idempotency_key": ["Enter true or false."]
    }
    assert not Agent.objects.exists()


def test_a_header_of_the_same_name_is_a_422_on_the_headers(api):
    response = create(api, {"send_idempotency_key": True, "headers": {"Idempotency-Key": "x"}})

    assert response.status_code == 422
    assert error_of(response)["details"] == {
        "config.headers": [
            "Conveyor sends the “Idempotency-Key” header itself while “Send an Idempotency-Key "
            "header” is on; remove it from the headers, or turn that option off to send your "
            "own value."
        ]
    }
    assert not Agent.objects.exists()
