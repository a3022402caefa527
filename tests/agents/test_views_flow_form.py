"""The flow agent's form through Django's test client: its JSON definition is what the page
sends (the step editor in flow_editor.js writes it; without script a person types it), problems
come back at their step with 422 and nothing saved (the editor itself: test_flow_form_browser.py).
"""

import json

import pytest
from django.urls import reverse

from agents.models import Agent

pytestmark = pytest.mark.django_db

NEW_FLOW = reverse("agents:create", args=["flow"])


def flow_form(steps, *, name="nightly", **config):
    """The flow form as the page sends it: the steps as JSON text, the agent's own fields."""
    data = {
        "agent-name": name,
        "agent-description": "",
        "agent-queue": "executions",
        "agent-overlap_policy": "skip",
        "config-steps": steps if isinstance(steps, str) else json.dumps(steps),
        "config-result": "last",
    }
    data.update({f"config-{key}": value for key, value in config.items()})
    return data


@pytest.fixture
def fetch(make_agent):
    return make_agent(name="fetch")


@pytest.fixture
def notify(make_agent):
    return make_agent(name="notify")


def test_the_new_flow_form_has_steps_and_flow_settings_but_no_agent_retries_or_secrets(
    alice_client,
):
    response = alice_client.get(NEW_FLOW)
    html = response.content.decode()
    assert response.status_code == 200
    for present in ('name="config-steps"', 'name="config-timeout"', 'name="config-retry"'):
        assert present in html
    assert "Definition as JSON" in html
    for absent in ("max_retries", "retry_backoff", "retry_on", "timeout", "priority"):
        assert f'name="agent-{absent}"' not in html
    assert "secrets-add" not in html and "Secrets" not in html
    assert "A flow is not retried as a whole" in html


def test_a_new_flow_starts_with_one_empty_run_step(alice_client):
    form = alice_client.get(NEW_FLOW).context["config_form"]
    assert json.loads(form["steps"].value()) == [{"key": "step-1", "agent": ""}]


def test_the_step_editor_offers_the_owners_other_agents_by_name(
    alice_client, make_agent, bob, fetch
):
    make_agent(bob, name="bobs-agent")
    flow = make_agent(
        name="the-flow", kind="flow", config={"steps": [{"key": "a", "agent": "fetch"}]}
    )
    offered = alice_client.get(reverse("agents:edit", args=[flow.uuid])).context["step_agents"]
    assert offered == [{"uuid": str(fetch.uuid), "name": "fetch", "kind": "function"}]


def test_a_flow_is_created_from_its_definition_with_agents_stored_by_uuid(
    alice_client, alice, fetch, notify
):
    steps = [
        {"key": "get", "agent": "fetch", "input": {"url": "{{ input.url }}"}},
        {"key": "pause", "wait": {"seconds": 30}},
        {
            "key": "tell",
            "agent": str(notify.uuid),
            "input": {"body": "{{ steps.get.result.body }}"},
            "retry": {"max_retries": 2, "backoff": 5},
        },
    ]
    response = alice_client.post(NEW_FLOW, flow_form(steps, timeout="600"))

    flow = Agent.objects.get(name="nightly")
    assert response.status_code == 302
    assert response["Location"] == reverse("agents:detail", args=[flow.uuid])
    assert flow.kind == "flow" and flow.owner == alice
    assert [s.get("agent") for s in flow.config["steps"]] == [
        str(fetch.uuid),
        None,
        str(notify.uuid),
    ]
    assert flow.config["steps"][2]["retry"] == {"max_retries": 2, "backoff": 5}
    assert flow.config["timeout"] == 600 and flow.secrets == {}


def test_an_unknown_reference_is_shown_at_its_step_and_nothing_is_saved(alice_client, fetch):
    steps = [
        {"key": "get", "agent": "fetch"},
        {"key": "tell", "agent": "fetch", "input": {"body": "{{ steps.gte.result.body }}"}},
    ]
    response = alice_client.post(NEW_FLOW, flow_form(steps))

    assert response.status_code == 422
    assert not Agent.objects.filter(kind="flow").exists()
    problems = response.context["step_errors"]
    assert list(problems) == ["steps.1.input"]
    assert (
        "there is no step “gte” (steps whose results it can read: get)"
        in problems["steps.1.input"][0]
    )
    html = response.content.decode()
    assert 'href="#flow-step-2">Step 2 “tell”, input</a>' in html
    # The editor hangs it on its row from this; the JSON box keeps what was sent.
    assert '"steps.1.input"' in html
    assert response.context["config_form"]["steps"].value() == json.dumps(steps)


def test_a_step_without_an_agent_and_a_group_step_with_an_unknown_one_are_named(
    alice_client, fetch
):
    steps = [
        {"key": "get", "agent": ""},
        {"key": "fan-out", "parallel": [{"key": "mail", "agent": "ghost"}]},
    ]
    response = alice_client.post(NEW_FLOW, flow_form(steps))

    assert response.status_code == 422
    problems = response.context["step_errors"]
    assert problems["steps.0.agent"] == ["Choose the agent this step runs (its name or UUID)."]
    assert problems["steps.1.parallel.0.agent"] == ["You have no agent “ghost”."]
    listed = {p["where"]: p["messages"] for p in response.context["step_problems"]}
    assert listed["Step 2 “fan-out”, step 1 in the group “mail”, agent"] == [
        "You have no agent “ghost”."
    ]
    assert not Agent.objects.filter(kind="flow").exists()


def test_a_bad_retry_override_is_shown_at_its_step(alice_client, fetch):
    steps = [{"key": "get", "agent": "fetch", "retry": {"max_retries": 11, "tries": 2}}]
    response = alice_client.post(NEW_FLOW, flow_form(steps))

    assert response.status_code == 422
    messages = response.context["step_errors"]["steps.0.retry"]
    assert "“max_retries” is a whole number from 0 to 10." in messages
    assert any("Unknown retry setting: tries" in m for m in messages)
    assert "Step 1 “get”, retries" in response.content.decode()
    assert not Agent.objects.filter(kind="flow").exists()


def test_json_that_does_not_parse_is_refused_at_the_json_box(alice_client):
    response = alice_client.post(NEW_FLOW, flow_form('[{"key": "a",}]'))

    assert response.status_code == 422
    assert "This is not valid JSON" in str(response.context["config_form"].errors["steps"])
    assert response.context["step_problems"] == []
    assert not Agent.objects.filter(kind="flow").exists()


def test_a_flow_that_runs_itself_is_refused_at_the_step(alice_client, make_agent, fetch):
    flow = make_agent(name="loop", kind="flow", config={"steps": [{"key": "a", "agent": "fetch"}]})
    steps = [{"key": "a", "agent": "fetch"}, {"key": "again", "agent": str(flow.uuid)}]
    response = alice_client.post(
        reverse("agents:edit", args=[flow.uuid]), flow_form(steps, name="loop")
    )

    assert response.status_code == 422
    assert response.context["step_errors"] == {"steps.1.agent": ["A flow cannot run itself."]}
    flow.refresh_from_db()
    assert len(flow.config["steps"]) == 1


def test_editing_a_flow_shows_its_definition_and_saving_it_back_keeps_it(
    alice_client, make_agent, fetch, notify
):
    flow = make_agent(
        name="report",
        kind="flow",
        config={
            "steps": [
                {"key": "get", "agent": "fetch", "input": {"day": "{{ input.day }}"}},
                {"key": "tell", "agent": "notify", "retry": {"enabled": False}},
            ],
            "timeout": 900,
            "retry": {"max_retries": 1},
        },
        max_retries=7,
        timeout=45,
        priority=8,
    )
    stored = flow.config
    page = alice_client.get(reverse("agents:edit", args=[flow.uuid]))
    form = page.context["config_form"]
    assert json.loads(form["steps"].value()) == stored["steps"]
    assert str(fetch.uuid) in page.content.decode()

    data = flow_form(
        form["steps"].value(), name="report", timeout="900", retry=form["retry"].value()
    )
    data["agent-description"] = "Every morning."
    response = alice_client.post(reverse("agents:edit", args=[flow.uuid]), data)

    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.config == stored
    assert flow.description == "Every morning."
    # What the form does not show is left as it was.
    assert (flow.max_retries, flow.timeout, flow.priority) == (7, 45, 8)


def test_the_agent_page_of_a_flow_lists_its_steps_and_where_retries_are_set(
    alice_client, make_agent, fetch
):
    flow = make_agent(
        name="report",
        kind="flow",
        config={
            "steps": [
                {"key": "get", "agent": "fetch"},
                {"key": "cool-off", "wait": {"seconds": 60}},
            ],
            "timeout": 900,
        },
    )
    html = alice_client.get(reverse("agents:detail", args=[flow.uuid])).content.decode()
    assert "get: run “fetch”" in html and "cool-off: wait 1 min" in html
    assert "900 s for the whole flow" in html
    assert "per attempt" not in html
