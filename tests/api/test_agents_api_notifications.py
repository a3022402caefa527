"""Notifications in the agents and executions API: an agent's rules (notify_on, retries,
recovery, steps) and the channels it tells, checked to be the owner's; an execution's page of
what was sent about it (its deliveries and their tries), on the detail only."""

from __future__ import annotations

import uuid

import pytest

from agents.models import Agent
from notifications.models import Delivery
from notifications.services import channel_create, delivery_send
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"
EXECUTIONS = "/api/v1/executions"
FUNCTION = {"kind": "function", "config": {"function": "demo.echo"}}


def channel_of(owner, name="mail", target=None, **kw):
    channel, _ = channel_create(
        owner=owner, kind=kw.get("kind", "email"), name=name, target=target or owner.email
    )
    return channel


# --- An agent's rules -------------------------------------------------------------------------


def test_a_new_agent_tells_no_channel_about_its_failures_by_default(api):
    body = api.post(AGENTS, {"name": "quiet", **FUNCTION}).json()

    assert body["notify_on"] == "failure"
    assert (body["notify_retries"], body["notify_recovery"], body["notify_steps"]) == (
        False,
        False,
        False,
    )
    assert body["notify_channels"] == []


def test_an_agent_is_made_with_its_rules_and_channels(api, alice):
    mail = channel_of(alice, "mail")
    ops = channel_of(alice, "ops", kind="webhook", target="https://example.com/in")

    response = api.post(
        AGENTS,
        {
            "name": "loud",
            **FUNCTION,
            "notify_on": "always",
            "notify_retries": True,
            "notify_recovery": True,
            "notify_channels": [str(ops.uuid), str(mail.uuid)],
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["notify_on"] == "always"
    assert body["notify_retries"] is True and body["notify_recovery"] is True
    assert sorted(body["notify_channels"]) == sorted([str(mail.uuid), str(ops.uuid)])
    agent = Agent.objects.get(name="loud")
    assert set(agent.notify_channels.all()) == {mail, ops}


def test_another_owner_s_channel_is_a_422_naming_it_and_nothing_is_made(api, bob):
    bobs = channel_of(bob, "bob's")

    response = api.post(AGENTS, {"name": "sneaky", **FUNCTION, "notify_channels": [str(bobs.uuid)]})

    assert response.status_code == 422
    error = error_of(response)
    assert error["details"]["notify_channels"] == [f"You have no notification channel {bobs.uuid}."]
    assert str(bobs.uuid) in error["message"]
    assert "bob's" not in response.content.decode()
    assert not Agent.objects.filter(name="sneaky").exists()


def test_an_unknown_channel_id_is_a_422_naming_it(api, alice):
    mine = channel_of(alice)
    unknown = uuid.uuid4()

    response = api.post(
        AGENTS, {"name": "typo", **FUNCTION, "notify_channels": [str(mine.uuid), str(unknown)]}
    )

    assert response.status_code == 422
    assert error_of(response)["details"]["notify_channels"] == [
        f"You have no notification channel {unknown}."
    ]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (["not-a-uuid"], "Not a channel id (a UUID): “not-a-uuid”."),
        ([7], "Not a channel id (a UUID): “7”."),
        ("3f2c", "Send a list of channel ids"),
        ({"id": "x"}, "Send a list of channel ids"),
    ],
)
def test_channels_that_are_not_a_list_of_ids_are_a_422_in_words(api, value, words):
    response = api.post(AGENTS, {"name": "odd", **FUNCTION, "notify_channels": value})

    assert response.status_code == 422
    (message,) = error_of(response)["details"]["notify_channels"]
    assert words in message


def test_a_rule_that_is_not_one_of_the_choices_is_a_422(api):
    response = api.post(AGENTS, {"name": "odd", **FUNCTION, "notify_on": "sometimes"})
    assert response.status_code == 422
    assert "notify_on" in error_of(response)["details"]


def test_patch_replaces_the_channels_keeps_them_when_left_out_and_clears_them_with_none(
    api, alice, make_agent
):
    mail = channel_of(alice, "mail")
    ops = channel_of(alice, "ops")
    agent = make_agent(alice, notify_channels=[mail])
    path = f"{AGENTS}/{agent.uuid}"

    replaced = api.patch(path, {"notify_channels": [str(ops.uuid)]}).json()
    kept = api.patch(path, {"notify_on": "success", "notify_steps": True}).json()
    cleared = api.patch(path, {"notify_channels": []}).json()

    assert replaced["notify_channels"] == [str(ops.uuid)]
    assert kept["notify_channels"] == [str(ops.uuid)]
    assert (kept["notify_on"], kept["notify_steps"]) == ("success", True)
    assert cleared["notify_channels"] == []
    agent.refresh_from_db()
    assert agent.notify_on == "success" and list(agent.notify_channels.all()) == []


def test_patching_in_another_owner_s_channel_changes_nothing(api, alice, bob, make_agent):
    mine = channel_of(alice)
    bobs = channel_of(bob)
    agent = make_agent(alice, notify_channels=[mine])

    response = api.patch(
        f"{AGENTS}/{agent.uuid}",
        {"notify_on": "always", "notify_channels": [str(mine.uuid), str(bobs.uuid)]},
    )

    assert response.status_code == 422
    assert str(bobs.uuid) in error_of(response)["details"]["notify_channels"][0]
    agent.refresh_from_db()
    assert agent.notify_on == "failure"
    assert list(agent.notify_channels.all()) == [mine]


def test_the_agents_list_shows_each_agent_s_channels(api, alice, make_agent):
    mail = channel_of(alice)
    make_agent(alice, name="a", notify_channels=[mail])
    make_agent(alice, name="b")

    results = api.get(AGENTS).json()["results"]

    assert [(a["name"], a["notify_channels"]) for a in results] == [
        ("a", [str(mail.uuid)]),
        ("b", []),
    ]


# --- An execution's deliveries ----------------------------------------------------------------


@pytest.fixture
def told(alice, make_agent, settings, httpserver):
    """Alice's agent that tells her webhook channel (on the test's own server) of failures."""
    settings.CONVEYOR_OUTBOUND_ALLOW = ["127.0.0.1"]
    channel, _ = channel_create(
        owner=alice,
        kind="webhook",
        name="ops",
        target=f"http://127.0.0.1:{httpserver.port}/in",
    )
    return make_agent(alice, notify_channels=[channel]), channel


def test_an_execution_s_detail_lists_its_deliveries_with_every_try(
    api, told, make_execution, httpserver
):
    agent, channel = told
    execution = make_execution(agent, "failed", error_category="auth")
    (delivery,) = Delivery.objects.filter(execution=execution)
    httpserver.expect_ordered_request("/in").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/in").respond_with_data("ok")
    delivery_send(delivery_id=delivery.pk)
    delivery_send(delivery_id=delivery.pk)

    body = api.get(f"{EXECUTIONS}/{execution.uuid}").json()

    (sent,) = body["deliveries"]
    delivery.refresh_from_db()
    assert sent["id"] == str(delivery.uuid)
    assert sent["event"] == "execution.failed" and sent["execution_attempt"] == 0
    assert sent["channel"] == {"id": str(channel.uuid), "name": "ops", "kind": "webhook"}
    assert (sent["status"], sent["attempts"], sent["last_status_code"]) == ("delivered", 2, 200)
    assert sent["last_error"] == ""
    assert sent["message_id"] == delivery.message_id
    assert sent["delivered_at"] is not None and sent["created_at"] is not None
    first, second = sent["tries"]
    assert (first["number"], first["status_code"], first["error"]) == (
        1,
        503,
        "The endpoint answered 503.",
    )
    assert (second["number"], second["status_code"], second["error"]) == (2, 200, "")
    # Both tries were the same message: a receiver can tell the second is a repeat.
    ids = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert ids == {delivery.message_id}


def test_a_delivery_still_trying_says_what_went_wrong_and_when_it_tries_next(
    api, told, make_execution, httpserver
):
    agent, _ = told
    execution = make_execution(agent, "failed")
    (delivery,) = Delivery.objects.filter(execution=execution)
    httpserver.expect_request("/in").respond_with_data("no", status=500)
    delivery_send(delivery_id=delivery.pk)

    (sent,) = api.get(f"{EXECUTIONS}/{execution.uuid}").json()["deliveries"]

    assert (sent["status"], sent["attempts"], sent["last_status_code"]) == ("pending", 1, 500)
    assert sent["last_error"] == "The endpoint answered 500."
    assert sent["next_attempt_at"] is not None and sent["delivered_at"] is None


def test_an_execution_nobody_was_told_about_has_no_deliveries(api, make_agent, make_execution):
    execution = make_execution(make_agent(), "failed")
    assert api.get(f"{EXECUTIONS}/{execution.uuid}").json()["deliveries"] == []


def test_the_executions_list_leaves_the_deliveries_out(api, told, make_execution):
    agent, _ = told
    make_execution(agent, "failed")

    (item,) = api.get(EXECUTIONS).json()["results"]

    assert "deliveries" not in item
