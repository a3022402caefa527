"""Deleting an agent from its pages: the edit page links to a confirmation page that says what
goes with the agent; deleting goes back to the list, or says why the agent was kept."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent
from executions.models import Execution

pytestmark = pytest.mark.django_db


def delete_url(agent) -> str:
    return reverse("agents:delete", args=[agent.uuid])


def test_the_edit_page_leads_to_the_confirmation(alice_client, make_agent):
    agent = make_agent()
    page = alice_client.get(reverse("agents:edit", args=[agent.uuid])).content.decode()
    assert f'href="{delete_url(agent)}"' in page
    assert "Delete agent" in page


def test_the_confirmation_says_what_goes_with_the_agent(
    alice_client, make_agent, make_execution, make_schedule
):
    agent = make_agent(name="nightly-report")
    make_execution(agent, "succeeded")
    make_execution(agent, "failed")
    make_schedule(agent)

    response = alice_client.get(delete_url(agent))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<strong>nightly-report</strong>" in page
    assert "its 2 executions, with their logs and results" in page
    assert "its 1 schedule<" in page
    assert 'class="btn btn-danger" type="submit">Delete agent' in page
    assert Agent.objects.filter(pk=agent.pk).exists()


def test_deleting_goes_back_to_the_list_with_a_message(alice_client, make_agent, make_execution):
    agent = make_agent(name="nightly-report")
    make_execution(agent, "succeeded")

    response = alice_client.post(delete_url(agent), follow=True)

    assert response.redirect_chain == [(reverse("agents:list"), 302)]
    assert "Agent “nightly-report” deleted, with its runs and schedules." in (
        response.content.decode()
    )
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not Execution.objects.exists()


def test_the_confirmation_of_an_agent_with_runs_in_progress_warns_and_offers_no_delete(
    alice_client, make_agent, make_execution
):
    agent = make_agent()
    make_execution(agent, "running")
    make_execution(agent, "queued")

    page = alice_client.get(delete_url(agent)).content.decode()

    assert "2 runs are in progress. Cancel them, or wait for them to finish" in page
    assert 'type="submit" disabled>Delete agent' in page


def test_a_refused_deletion_shows_why_and_keeps_the_agent(alice_client, make_agent, make_execution):
    agent = make_agent(name="busy-one")
    make_execution(agent, "retrying")

    response = alice_client.post(delete_url(agent))

    assert response.status_code == 409
    assert (
        "“busy-one” has 1 run in progress (queued, running or retrying): cancel them, or wait "
        "for them to finish, before deleting it."
    ) in response.content.decode()
    assert Agent.objects.filter(pk=agent.pk).exists()
