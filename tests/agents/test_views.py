"""The agent pages, through Django's test client: run now, create and edit (browser tests live
in test_views_browser.py)."""

import pytest
from django.urls import reverse

from agents.models import Agent
from executions.models import Execution

pytestmark = pytest.mark.django_db


def test_run_now_reports_bad_json_inline_and_queues_nothing(alice_client, make_agent):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"a": 1,}'}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "This is not valid JSON" in response.content.decode()
    assert "line 1, column 9" in response.content.decode()
    assert not Execution.objects.exists()


def test_run_now_reports_input_the_function_rejects_before_queueing(alice_client, make_agent):
    agent = make_agent(config={"function": "demo.flaky"})
    response = alice_client.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"fail_times": "many"}'}
    )
    assert response.status_code == 422
    assert "“fail_times” must be a number" in response.content.decode()
    assert not Execution.objects.exists()


def test_run_now_queues_and_goes_to_the_execution_page(alice_client, make_agent):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"a": 1}'}, HTTP_HX_REQUEST="true"
    )
    execution = Execution.objects.get()
    assert execution.input == {"a": 1} and execution.trigger == "manual"
    assert response["HX-Redirect"] == reverse("executions:detail", args=[execution.uuid])


def test_a_paused_agent_says_so_instead_of_queueing(alice_client, make_agent):
    agent = make_agent(is_paused=True)
    response = alice_client.post(reverse("agents:run", args=[agent.uuid]), {"input": ""})
    assert "is paused" in response.content.decode()
    assert not Execution.objects.exists()


def test_creating_an_agent_shows_config_errors_next_to_the_fields(alice_client):
    response = alice_client.post(
        reverse("agents:create", args=["function"]),
        {
            "agent-name": "my agent",
            "agent-max_retries": "3",
            "agent-retry_backoff": "5",
            "agent-retry_backoff_max": "60",
            "agent-timeout": "30",
            "agent-priority": "5",
            "agent-queue": "executions",
            "agent-overlap_policy": "skip",
            "config-function": "nope",
        },
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Agent.objects.exists()


def test_creating_an_agent_with_a_secret_keeps_the_value_out_of_every_page(alice_client, alice):
    response = alice_client.post(
        reverse("agents:create", args=["function"]),
        {
            "agent-name": "mailer",
            "agent-max_retries": "2",
            "agent-retry_backoff": "5",
            "agent-retry_backoff_max": "60",
            "agent-timeout": "30",
            "agent-priority": "5",
            "agent-queue": "executions",
            "agent-overlap_policy": "skip",
            "agent-retry_on": ["network", "timeout"],
            "agent-retry_jitter": "on",
            "config-function": "demo.echo",
            "secrets-add": "api_token=tok-very-secret-99",
        },
    )
    agent = Agent.objects.get(name="mailer")
    assert response.status_code == 302 and agent.owner == alice
    assert agent.secrets == {"api_token": "tok-very-secret-99"}
    assert agent.retry_on == ["network", "timeout"] and agent.max_retries == 2
    for url in (
        reverse("agents:detail", args=[agent.uuid]),
        reverse("agents:edit", args=[agent.uuid]),
        reverse("agents:list"),
        "/",
    ):
        page = alice_client.get(url).content.decode()
        assert "tok-very-secret-99" not in page
    assert (
        "api_token"
        in alice_client.get(reverse("agents:detail", args=[agent.uuid])).content.decode()
    )


def test_editing_with_blank_secrets_keeps_them_and_remove_drops_them(alice_client, make_agent):
    agent = make_agent(secrets={"a": "alpha-1", "b": "beta-2"})
    form = {
        "agent-name": agent.name,
        "agent-max_retries": "1",
        "agent-retry_backoff": "1",
        "agent-retry_backoff_max": "10",
        "agent-timeout": "30",
        "agent-priority": "5",
        "agent-queue": "executions",
        "agent-overlap_policy": "skip",
        "config-function": "demo.echo",
        "secrets-remove": ["b"],
    }
    response = alice_client.post(reverse("agents:edit", args=[agent.uuid]), form)
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.secrets == {"a": "alpha-1"} and agent.max_retries == 1


def test_a_duplicate_name_is_explained(alice_client, make_agent):
    make_agent(name="twin")
    response = alice_client.post(
        reverse("agents:create", args=["function"]),
        {
            "agent-name": "twin",
            "agent-max_retries": "3",
            "agent-retry_backoff": "5",
            "agent-retry_backoff_max": "60",
            "agent-timeout": "30",
            "agent-priority": "5",
            "agent-queue": "executions",
            "agent-overlap_policy": "skip",
            "config-function": "demo.echo",
        },
    )
    assert "You already have an agent named" in response.content.decode()


def test_run_now_is_prefilled_with_the_input_the_function_expects(alice_client, make_agent):
    agent = make_agent(config={"function": "demo.flaky"})
    html = alice_client.get(reverse("agents:detail", args=[agent.uuid])).content.decode()
    assert "&quot;fail_times&quot;: 2" in html
    assert "an example of what this agent expects" in html


def test_an_agent_whose_last_run_is_delayed_says_when_it_starts(alice_client, make_agent):
    from datetime import timedelta

    from django.utils import timezone

    from executions.services import execution_request

    agent = make_agent()
    start = timezone.now() + timedelta(minutes=19, seconds=30)
    execution_request(agent=agent, trigger="api", not_before=start)
    html = alice_client.get(reverse("agents:list")).content.decode()
    assert "starts in 19 min" in html or "starts in 20 min" in html
