"""The webhook through the API: turn it on (the first secret is returned once), rotate (the
new secret is returned once), finish the rotation, turn it off."""

import pytest

from agents.models import Agent
from tests.conftest import error_of

pytestmark = pytest.mark.django_db


def webhook_url(agent, suffix=""):
    return f"/api/v1/agents/{agent.uuid}/webhook{suffix}"


def test_turning_it_on_returns_the_first_secret_once(api, make_agent, alice, sender):
    agent = make_agent(alice)
    first = api.post(webhook_url(agent, "/enable"))
    assert first.status_code == 200
    body = first.json()
    assert body["enabled"] is True and body["secret"].startswith("whsec_")
    assert body["url"] == f"http://testserver/hooks/{agent.uuid}/"
    again = api.post(webhook_url(agent, "/enable")).json()
    assert "secret" not in again
    state = api.get(webhook_url(agent)).json()
    assert "secret" not in state and state["rotation_in_progress"] is False
    assert body["secret"] not in api.get(f"/api/v1/agents/{agent.uuid}").content.decode()
    assert sender.send(agent, {"n": 1}, secret=body["secret"]).status_code == 202


def test_a_rotation_through_the_api(api, make_agent, alice, sender):
    agent = make_agent(alice)
    old = api.post(webhook_url(agent, "/enable")).json()["secret"]
    rotated = api.post(webhook_url(agent, "/rotate")).json()
    new = rotated["secret"]
    assert new != old and rotated["rotation_in_progress"] is True
    assert sender.send(agent, {"n": 1}, secret=old).status_code == 202
    assert sender.send(agent, {"n": 2}, secret=new).status_code == 202
    finished = api.post(webhook_url(agent, "/rotate/finish"))
    assert finished.status_code == 200
    assert finished.json()["rotation_in_progress"] is False and "secret" not in finished.json()
    assert sender.send(agent, {"n": 3}, secret=old).status_code == 401
    assert sender.send(agent, {"n": 4}, secret=new).status_code == 202


def test_finishing_without_a_rotation_is_a_409(api, make_agent, alice):
    agent = make_agent(alice)
    api.post(webhook_url(agent, "/enable"))
    response = api.post(webhook_url(agent, "/rotate/finish"))
    assert response.status_code == 409
    assert error_of(response)["code"] == "no_rotation"


def test_rotating_again_before_finishing_replaces_the_unfinished_secret(api, make_agent, alice,
                                                                         sender):  # fmt: skip
    agent = make_agent(alice)
    current = api.post(webhook_url(agent, "/enable")).json()["secret"]
    lost = api.post(webhook_url(agent, "/rotate")).json()["secret"]
    replacement = api.post(webhook_url(agent, "/rotate")).json()["secret"]
    assert sender.send(agent, {"n": 1}, secret=lost).status_code == 401
    assert sender.send(agent, {"n": 2}, secret=current).status_code == 202
    assert sender.send(agent, {"n": 3}, secret=replacement).status_code == 202


def test_turning_it_off_makes_calls_404_and_keeps_the_secret(api, make_agent, alice, sender):
    agent = make_agent(alice)
    secret = api.post(webhook_url(agent, "/enable")).json()["secret"]
    assert api.post(webhook_url(agent, "/disable")).json()["enabled"] is False
    assert sender.send(agent, {"n": 1}, secret=secret).status_code == 404
    agent.refresh_from_db()
    assert agent.webhook_secrets["current"] == secret
    assert Agent.objects.get(pk=agent.pk).webhook_enabled is False
