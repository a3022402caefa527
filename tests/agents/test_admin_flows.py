"""Flow agents in the agent admin: saved through the services like any agent (steps' agents
named by name are stored by UUID, problems shown on the config field with the step named), and
said in words with the names of the agents they run."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def change_form_data(client, agent, **changes):
    """The agent's change form as the admin shows it, with ``changes``."""
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    form = client.get(url).context["adminform"].form
    data = {n: v for n, v in form.initial.items() if n in form.fields and v not in (None, False)}
    data.update(
        {
            "owner": agent.owner_id,
            "config": json.dumps(agent.config),
            "retry_on": json.dumps(agent.retry_on),
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
            **changes,
        }
    )
    return url, data


@pytest.fixture
def flow(make_agent, alice):
    make_agent(alice, name="fetch")
    make_agent(alice, name="send")
    return make_agent(
        alice,
        name="report",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "fetch"},
                {"key": "send", "agent": "send", "input": {"b": "{{ steps.fetch.result }}"}},
            ]
        },
    )


def test_a_flow_s_page_says_in_words_which_agents_its_steps_run(staff_client, flow):
    html = staff_client.get(reverse("admin:agents_agent_change", args=[flow.pk])).content.decode()

    assert "Step 1: fetch: run “fetch”" in html
    assert "Step 2: send: run “send”" in html


def test_a_step_named_by_its_agent_s_name_is_stored_by_uuid(staff_client, flow, make_agent):
    archive = make_agent(flow.owner, name="archive")
    steps = [*flow.config["steps"], {"key": "archive", "agent": "Archive"}]
    url, data = change_form_data(staff_client, flow, config=json.dumps({"steps": steps}))

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    flow.refresh_from_db()
    assert flow.config["steps"][2]["agent"] == str(archive.uuid)


def test_a_bad_reference_is_shown_on_the_config_naming_the_step(staff_client, flow):
    steps = [flow.config["steps"][0], {"key": "send", "agent": "send", "input": "{{ steps.x }}"}]
    url, data = change_form_data(staff_client, flow, config=json.dumps({"steps": steps}))

    response = staff_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["config"]
    assert any(e.startswith("steps.1.input: “{{ steps.x }}”") for e in errors), errors
    flow.refresh_from_db()
    assert flow.config["steps"][1]["input"] == {"b": "{{ steps.fetch.result }}"}
