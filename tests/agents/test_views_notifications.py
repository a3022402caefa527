"""The agent form's Notifications section (every kind, create and edit) and the agent page's
one line about it, through Django's test client."""

import json

import pytest
from django.urls import reverse

from agents.models import Agent
from notifications.services import channel_create

pytestmark = pytest.mark.django_db

SETTINGS = "/settings/notifications/"


def channel(owner, name, kind="email", target=None):
    target = target or (
        f"{name}@example.com" if kind == "email" else f"https://h.example.com/{name}"
    )
    return channel_create(owner=owner, kind=kind, name=name, target=target)[0]


def function_form(name="mailer", **notify):
    data = {
        "agent-name": name,
        "agent-max_retries": "2",
        "agent-retry_backoff": "5",
        "agent-retry_backoff_max": "60",
        "agent-timeout": "30",
        "agent-priority": "5",
        "agent-queue": "executions",
        "agent-overlap_policy": "skip",
        "config-function": "demo.echo",
    }
    data.update({f"agent-{key}": value for key, value in notify.items()})
    return data


def flow_form(name="nightly", **notify):
    data = {
        "agent-name": name,
        "agent-queue": "executions",
        "agent-overlap_policy": "skip",
        "config-steps": json.dumps([{"key": "a", "agent": "echo"}]),
        "config-result": "last",
    }
    data.update({f"agent-{key}": value for key, value in notify.items()})
    return data


@pytest.mark.parametrize("kind", ["function", "http", "flow"])
def test_every_kind_of_form_has_the_section_with_the_choices_in_words(alice_client, kind):
    html = alice_client.get(reverse("agents:create", args=[kind])).content.decode()
    assert "<legend>Notifications</legend>" in html
    for label in ("When a run fails for good", "When a run succeeds",
                  "When a run ends, whatever the outcome", "Never"):  # fmt: skip
        assert label in html
    assert 'name="agent-notify_on" value="failure"' in html  # the default, chosen
    assert "Also when it recovers" in html
    # A flow is not retried as a whole, but has steps to tell about; other kinds the reverse.
    assert ("Also on each retry" in html) is (kind != "flow")
    assert ("Also for each step" in html) is (kind == "flow")


def test_without_channels_the_section_links_to_the_settings_page(alice_client):
    html = alice_client.get(reverse("agents:create", args=["function"])).content.decode()
    assert 'id="no-channels"' in html and f'href="{SETTINGS}"' in html


def test_the_section_offers_the_owners_channels_only(alice_client, alice, bob):
    channel(alice, "ops")
    off = channel(alice, "pager", kind="webhook")
    off.is_enabled = False
    off.save()
    channel(bob, "bobs")
    html = alice_client.get(reverse("agents:create", args=["function"])).content.decode()
    assert "ops (Email)" in html and "pager (Webhook (signed)), turned off" in html
    assert "bobs" not in html and 'id="no-channels"' not in html


def test_creating_an_agent_with_its_notifications(alice_client, alice):
    ops, pager = channel(alice, "ops"), channel(alice, "pager", kind="webhook")
    response = alice_client.post(
        reverse("agents:create", args=["function"]),
        function_form(
            notify_on="always",
            notify_retries="on",
            notify_recovery="on",
            notify_channels=[str(ops.uuid), str(pager.uuid)],
        ),
    )
    agent = Agent.objects.get()
    assert response.status_code == 302
    assert (agent.notify_on, agent.notify_retries, agent.notify_recovery) == ("always", True, True)
    assert set(agent.notify_channels.all()) == {ops, pager}


def test_creating_a_flow_that_tells_about_each_step(alice_client, alice, make_agent):
    make_agent(alice, name="echo")
    ops = channel(alice, "ops")
    response = alice_client.post(
        reverse("agents:create", args=["flow"]),
        flow_form(notify_on="failure", notify_steps="on", notify_channels=[str(ops.uuid)]),
    )
    assert response.status_code == 302
    flow = Agent.objects.get(kind="flow")
    assert flow.notify_steps is True and list(flow.notify_channels.all()) == [ops]


def test_the_edit_form_shows_what_is_set_and_saving_replaces_the_channels(
    alice_client, alice, make_agent
):
    ops, pager = channel(alice, "ops"), channel(alice, "pager")
    agent = make_agent(alice, name="mailer", notify_on="success", notify_channels=[ops])
    url = reverse("agents:edit", args=[agent.uuid])
    form = alice_client.get(url).context["form"]
    assert form["notify_on"].value() == "success"
    assert form["notify_channels"].value() == [str(ops.uuid)]
    html = alice_client.get(url).content.decode()
    assert f'value="{ops.uuid}"' in html and f'value="{pager.uuid}"' in html

    alice_client.post(url, function_form(notify_on="never", notify_channels=[str(pager.uuid)]))
    agent.refresh_from_db()
    assert agent.notify_on == "never" and list(agent.notify_channels.all()) == [pager]

    alice_client.post(url, function_form(notify_on="failure"))  # every box unticked
    assert not agent.notify_channels.exists()


def test_another_owners_channel_is_refused_and_nothing_is_saved(alice_client, bob):
    bobs = channel(bob, "bobs")
    response = alice_client.post(
        reverse("agents:create", args=["function"]),
        function_form(notify_channels=[str(bobs.uuid)]),
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Agent.objects.exists()


def test_an_unknown_notify_choice_is_refused(alice_client):
    response = alice_client.post(
        reverse("agents:create", args=["function"]), function_form(notify_on="sometimes")
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Agent.objects.exists()


def test_a_form_sent_without_the_choice_keeps_the_agents_own(alice_client, alice, make_agent):
    agent = make_agent(alice, name="mailer", notify_on="always")
    alice_client.post(reverse("agents:edit", args=[agent.uuid]), function_form())
    agent.refresh_from_db()
    assert agent.notify_on == "always"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({}, "Tells you nothing: no channel is chosen."),
        ({"notify_on": "never"}, "Tells you nothing."),
        ({"channels": ["ops"]}, "Tells you when a run fails, by Email (ops)."),
        ({"notify_on": "always", "notify_retries": True, "channels": ["ops", "pager"]},
         "Tells you when a run ends and on each retry, by Email (ops), Webhook (pager)."),
        ({"notify_on": "never", "notify_recovery": True, "channels": ["pager"]},
         "Tells you when it recovers, by Webhook (pager)."),
    ],
)  # fmt: skip
def test_the_agent_page_says_in_one_line_what_it_tells_and_where(
    alice_client, alice, make_agent, fields, line
):
    channels = {"ops": channel(alice, "ops"), "pager": channel(alice, "pager", kind="webhook")}
    wanted = [channels[name] for name in fields.pop("channels", [])]
    agent = make_agent(alice, notify_channels=wanted, **fields)
    response = alice_client.get(reverse("agents:detail", args=[agent.uuid]))
    assert response.context["notify_summary"] == line
