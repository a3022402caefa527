"""The http kind's Idempotency-Key option in its config schema, its summary and on the agent
form page. (Through the API: tests/api/test_agents_api_idempotency_key.py.)"""

import re

import pytest
from django.urls import reverse

from agents.kinds.base import ConfigInvalid
from agents.kinds.http import HttpConfigForm
from agents.kinds.http import kind as http_kind
from agents.models import Agent

URL = "https://example.com/charge"
CLASH = (
    "Conveyor sends the “{name}” header itself while “Send an Idempotency-Key header” is on; "
    "remove it from {where}, or turn that option off to send your own value."
)


def errors(config):
    with pytest.raises(ConfigInvalid) as caught:
        http_kind.clean_config(config)
    return caught.value.errors


# --- The schema --------------------------------------------------------------------------------


def test_it_is_off_unless_asked_for():
    assert http_kind.clean_config({"url": URL})["send_idempotency_key"] is False


@pytest.mark.parametrize(("given", "stored"), [(True, True), (False, False), (None, False)])
def test_an_api_call_turns_it_on_or_off_with_a_json_boolean(given, stored):
    config = http_kind.clean_config({"url": URL, "send_idempotency_key": given})

    assert config["send_idempotency_key"] is stored
    assert http_kind.clean_config(config) == config


@pytest.mark.parametrize("given", ["yes", "no", "1", 1, 0, [], {}])
def test_anything_but_true_or_false_is_refused_rather_than_guessed_at(given):
    assert errors({"url": URL, "send_idempotency_key": given}) == {
        "send_idempotency_key": ["Enter true or false."]
    }


@pytest.mark.parametrize(
    ("field", "headers", "where"),
    [
        ("headers", {"Idempotency-Key": "order-42"}, "the headers"),
        ("headers", {"idempotency-key": "order-42"}, "the headers"),
        ("secret_headers", {"IDEMPOTENCY-KEY": "order_key"}, "the secret headers"),
    ],
)
def test_a_header_of_the_same_name_is_refused_next_to_it_while_the_option_is_on(
    field, headers, where
):
    name = next(iter(headers))

    assert errors({"url": URL, field: headers, "send_idempotency_key": True}) == {
        field: [CLASH.format(name=name, where=where)]
    }


def test_with_the_option_off_the_owner_may_send_a_key_header_of_their_own():
    config = http_kind.clean_config({"url": URL, "headers": {"Idempotency-Key": "order-42"}})

    assert config["headers"] == {"Idempotency-Key": "order-42"}
    assert config["send_idempotency_key"] is False


def test_the_summary_says_so_when_it_is_on_and_nothing_when_it_is_off():
    on = http_kind.summary(http_kind.clean_config({"url": URL, "send_idempotency_key": True}))
    off = http_kind.summary(http_kind.clean_config({"url": URL}))

    assert ("Idempotency key", "Sent as Idempotency-Key, the same on every attempt") in on
    assert [label for label, _ in off] == [label for label, _ in on if label != "Idempotency key"]


def test_the_help_text_says_what_it_does_and_why():
    field = HttpConfigForm().fields["send_idempotency_key"]

    assert field.label == "Send an Idempotency-Key header"
    assert "same value on every attempt of a run" in field.help_text
    assert "a manual retry included, gets a new value" in field.help_text
    assert "recognise the repeat and ignore it" in field.help_text


# --- The agent form page -----------------------------------------------------------------------

AGENT_FIELDS = {
    "agent-max_retries": "3",
    "agent-retry_backoff": "5",
    "agent-retry_backoff_max": "60",
    "agent-timeout": "30",
    "agent-priority": "5",
    "agent-queue": "executions",
    "agent-overlap_policy": "skip",
}


def field_html(response, name):
    """The rendered block of one config field (templates/_field.html)."""
    html = response.content.decode()
    match = re.search(
        rf'<div class="field field-{name}[ "].*?(?=<div class="field |</fieldset>)', html, re.S
    )
    assert match, f"no field {name} on the page"
    return match.group(0)


@pytest.mark.django_db
def test_the_new_agent_page_shows_the_option_unticked_with_its_help(alice_client):
    response = alice_client.get(reverse("agents:create", args=["http"]))

    block = field_html(response, "send_idempotency_key")
    # Laid out as the page's other checkboxes: the box inside its label.
    assert block.startswith('<div class="field field-send_idempotency_key checkbox">')
    assert re.search(r'<label><input type="checkbox"[^>]*> Send an Idempotency-Key', block)
    assert "checked" not in block
    assert "Send an Idempotency-Key header" in block
    assert "recognise the repeat and ignore it" in block


@pytest.mark.django_db
def test_ticking_it_on_the_page_saves_it_and_the_edit_page_shows_it_ticked(alice_client, alice):
    response = alice_client.post(
        reverse("agents:create", args=["http"]),
        {
            **AGENT_FIELDS,
            "agent-name": "payments",
            "config-url": URL,
            "config-send_idempotency_key": "on",
        },
    )

    assert response.status_code == 302, response.content.decode()
    agent = Agent.objects.get(owner=alice, name="payments")
    assert agent.config["send_idempotency_key"] is True
    edit = alice_client.get(reverse("agents:edit", args=[agent.uuid]))
    assert "checked" in field_html(edit, "send_idempotency_key")


@pytest.mark.django_db
def test_unticking_it_on_the_edit_page_turns_it_off(alice_client, make_agent):
    agent = make_agent(kind="http", config={"url": URL, "send_idempotency_key": True})

    response = alice_client.post(
        reverse("agents:edit", args=[agent.uuid]),
        {**AGENT_FIELDS, "agent-name": agent.name, "config-url": URL},
    )

    assert response.status_code == 302, response.content.decode()
    agent.refresh_from_db()
    assert agent.config["send_idempotency_key"] is False


@pytest.mark.django_db
def test_the_page_shows_the_clash_next_to_the_header_and_saves_nothing(alice_client):
    response = alice_client.post(
        reverse("agents:create", args=["http"]),
        {
            **AGENT_FIELDS,
            "agent-name": "payments",
            "config-url": URL,
            "config-headers": '{"Idempotency-Key": "order-42"}',
            "config-send_idempotency_key": "on",
        },
    )

    assert response.status_code == 422
    block = field_html(response, "headers")
    assert "has-error" in block
    assert CLASH.format(name="Idempotency-Key", where="the headers") in block
    # The owner's choices are kept on the page, to fix one or the other.
    assert "checked" in field_html(response, "send_idempotency_key")
    assert not Agent.objects.exists()
