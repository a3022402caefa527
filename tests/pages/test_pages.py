"""The owner's pages, through Django's test client (browser tests live in test_browser.py)."""

import pytest
from django.urls import reverse

from agents.models import Agent
from executions.models import Execution
from executions.services import execution_cancel, execution_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


def test_run_now_reports_bad_json_inline_and_queues_nothing(signed_in, make_agent):
    agent = make_agent()
    response = signed_in.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"a": 1,}'}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "This is not valid JSON" in response.content.decode()
    assert "line 1, column 9" in response.content.decode()
    assert not Execution.objects.exists()


def test_run_now_reports_input_the_function_rejects_before_queueing(signed_in, make_agent):
    agent = make_agent(config={"function": "demo.flaky"})
    response = signed_in.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"fail_times": "many"}'}
    )
    assert response.status_code == 422
    assert "“fail_times” must be a number" in response.content.decode()
    assert not Execution.objects.exists()


def test_run_now_queues_and_goes_to_the_execution_page(signed_in, make_agent):
    agent = make_agent()
    response = signed_in.post(
        reverse("agents:run", args=[agent.uuid]), {"input": '{"a": 1}'}, HTTP_HX_REQUEST="true"
    )
    execution = Execution.objects.get()
    assert execution.input == {"a": 1} and execution.trigger == "manual"
    assert response["HX-Redirect"] == reverse("executions:detail", args=[execution.uuid])


def test_a_paused_agent_says_so_instead_of_queueing(signed_in, make_agent):
    agent = make_agent(is_paused=True)
    response = signed_in.post(reverse("agents:run", args=[agent.uuid]), {"input": ""})
    assert "is paused" in response.content.decode()
    assert not Execution.objects.exists()


def test_creating_an_agent_shows_config_errors_next_to_the_fields(signed_in):
    response = signed_in.post(
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


def test_creating_an_agent_with_a_secret_keeps_the_value_out_of_every_page(signed_in, alice):
    response = signed_in.post(
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
        page = signed_in.get(url).content.decode()
        assert "tok-very-secret-99" not in page
    assert (
        "api_token" in signed_in.get(reverse("agents:detail", args=[agent.uuid])).content.decode()
    )


def test_editing_with_blank_secrets_keeps_them_and_remove_drops_them(signed_in, make_agent):
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
    response = signed_in.post(reverse("agents:edit", args=[agent.uuid]), form)
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.secrets == {"a": "alpha-1"} and agent.max_retries == 1


def test_a_duplicate_name_is_explained(signed_in, make_agent):
    make_agent(name="twin")
    response = signed_in.post(
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
    assert "You already have an agent with this name." in response.content.decode()


def test_the_live_fragment_polls_while_active_and_stops_when_final(signed_in, make_agent):
    execution = execution_create(agent=make_agent(), trigger="manual")
    live = reverse("executions:live", args=[execution.uuid])
    assert 'hx-trigger="every 1s' in signed_in.get(live).content.decode()
    execution_cancel(execution=execution)
    final = signed_in.get(live).content.decode()
    assert "hx-trigger" not in final and "Cancelled" in final


def test_cancel_from_the_page_returns_the_updated_fragment(signed_in, make_agent):
    execution = execution_create(agent=make_agent(), trigger="manual")
    response = signed_in.post(
        reverse("executions:cancel", args=[execution.uuid]), HTTP_HX_REQUEST="true"
    )
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert 'data-status="cancelled"' in response.content.decode()


def test_retry_with_edited_input_lands_on_the_new_execution(signed_in, make_agent):
    execution = execution_create(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=execution)
    response = signed_in.post(
        reverse("executions:retry", args=[execution.uuid]),
        {"edit": "1", "input": '{"v": 2}'},
        HTTP_HX_REQUEST="true",
    )
    new = Execution.objects.exclude(pk=execution.pk).get()
    assert new.input == {"v": 2} and new.retry_of == execution
    assert response["HX-Redirect"] == reverse("executions:detail", args=[new.uuid])


def test_retry_with_broken_json_says_so_and_creates_nothing(signed_in, make_agent):
    execution = execution_create(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=execution)
    response = signed_in.post(
        reverse("executions:retry", args=[execution.uuid]),
        {"edit": "1", "input": "{v: 2}"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    assert "This is not valid JSON" in response.content.decode()
    assert Execution.objects.count() == 1


def test_the_traceback_is_for_staff_only(client, alice, staff, make_agent):
    execution = execution_create(agent=make_agent(), trigger="manual")
    Execution.objects.filter(pk=execution.pk).update(
        status="failed",
        error_title="Boom",
        error_category="internal",
        error_message="It broke.",
        error_detail="Traceback (most recent call last): secret-sauce",
    )
    url = reverse("executions:detail", args=[execution.uuid])
    client.force_login(alice)
    page = client.get(url).content.decode()
    assert "It broke." in page and "secret-sauce" not in page
    # Staff who own an execution see the traceback on the page too.
    Execution.objects.filter(pk=execution.pk).update(owner=staff)
    client.force_login(staff)
    assert "secret-sauce" in client.get(url).content.decode()


def test_the_executions_list_filters_and_pages_by_keyset(signed_in, make_agent):
    a, b = make_agent(name="a-one"), make_agent(name="b-two")
    for _ in range(55):
        execution_create(agent=a, trigger="manual")
    cancelled = execution_create(agent=b, trigger="api")
    execution_cancel(execution=cancelled)

    first = signed_in.get(reverse("executions:list"))
    assert first.context["next_cursor"] and len(first.context["rows"]) == 50
    second = signed_in.get(reverse("executions:list"), {"after": first.context["next_cursor"]})
    assert len(second.context["rows"]) == 6
    seen = {e.pk for e in first.context["rows"]} | {e.pk for e in second.context["rows"]}
    assert len(seen) == 56

    only = signed_in.get(reverse("executions:list"), {"status": "cancelled", "trigger": "api"})
    assert [e.pk for e in only.context["rows"]] == [cancelled.pk]
    by_agent = signed_in.get(reverse("executions:list"), {"agent": str(b.uuid)})
    assert [e.pk for e in by_agent.context["rows"]] == [cancelled.pk]
    bad_cursor = signed_in.get(reverse("executions:list"), {"after": "!!garbage!!"})
    assert bad_cursor.status_code == 200 and len(bad_cursor.context["rows"]) == 50


@pytest.mark.parametrize("url_name", ["home", "agents:list", "executions:list"])
def test_list_pages_run_a_constant_number_of_queries(
    signed_in, make_agent, django_assert_max_num_queries, url_name
):
    def fill(agents, runs):
        for i in range(agents):
            agent = make_agent(name=f"{url_name.replace(':', '-')}-{agents}-{i}")
            for _ in range(runs):
                execution_create(agent=agent, trigger="manual")

    fill(2, 2)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as small:
        assert signed_in.get(reverse(url_name)).status_code == 200
    fill(6, 8)
    with django_assert_max_num_queries(len(small.captured_queries)):
        assert signed_in.get(reverse(url_name)).status_code == 200


def test_pages_explain_themselves_when_empty(signed_in):
    assert "No agents yet" in signed_in.get("/").content.decode()
    assert "No executions yet" in signed_in.get(reverse("executions:list")).content.decode()


def test_an_unknown_page_is_a_friendly_404(signed_in):
    response = signed_in.get("/executions/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
