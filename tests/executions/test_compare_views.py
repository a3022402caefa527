"""The compare page (executions.compare_views) and "Compare with…" on the execution page."""

from datetime import timedelta

import pytest
from django.urls import reverse

from agents.services import agent_update
from executions.models import Execution

pytestmark = pytest.mark.django_db


def compare_url(one, other):
    return reverse("executions:compare", args=[one.uuid, other.uuid])


def pick_url(execution, given):
    return reverse("executions:compare-pick", args=[execution.uuid]) + f"?with={given}"


def text(response) -> str:
    return response.content.decode()


def test_it_shows_the_configuration_change_and_the_input_diff(
    alice_client, make_agent, make_execution
):
    agent = make_agent(timeout=30)
    yesterday = make_execution(agent, ago=timedelta(days=1), input={"city": "Oslo", "days": 3})
    agent_update(agent=agent, timeout=5, config={"function": "demo.flaky"})
    today = make_execution(
        agent, "failed", ago=timedelta(minutes=1), input={"city": "Bergen", "days": 3}
    )

    response = alice_client.get(compare_url(today, yesterday))

    assert response.status_code == 200
    page = text(response)
    assert f"Configuration changed between these runs: version 1 → {today.agent_version}." in page
    assert "config.function" in page and "demo.echo" in page and "demo.flaky" in page
    assert '<code class="diff-path">timeout</code>' in page
    assert '<code class="diff-path">city</code>' in page
    assert "Oslo" in page and "Bergen" in page
    # "days" did not change: it is not listed as a difference.
    assert '<code class="diff-path">days</code>' not in page
    # The earlier run is on the left whichever way round the address names them.
    comparison = response.context["c"]
    assert comparison.before.execution == yesterday
    assert comparison.after.execution == today


def test_same_configuration_is_said_with_its_version(alice_client, make_agent, make_execution):
    agent = make_agent()
    one = make_execution(agent, input={"n": 1})
    other = make_execution(agent, input={"n": 1})
    page = text(alice_client.get(compare_url(one, other)))
    assert "Same configuration (version 1)." in page
    assert "Same input." in page


def test_an_old_run_without_a_version_says_its_configuration_was_not_recorded(
    alice_client, make_agent, make_execution
):
    agent = make_agent()
    old = make_execution(agent, ago=timedelta(days=30))
    # No service writes a run without a version: this one stands for a run created before
    # versions were recorded (the migration left their agent_version empty).
    Execution.objects.filter(pk=old.pk).update(agent_version=None)
    new = make_execution(agent)
    page = text(alice_client.get(compare_url(new, old)))
    assert "configuration not recorded for this run" in page
    assert "Configuration not recorded for the earlier run" in page


def test_another_users_run_is_not_found(alice_client, bob, make_agent, make_execution):
    mine = make_execution(make_agent())
    theirs = make_execution(make_agent(owner=bob, name="bobs"))
    assert alice_client.get(compare_url(mine, theirs)).status_code == 404
    assert alice_client.get(compare_url(theirs, mine)).status_code == 404
    response = alice_client.get(pick_url(mine, theirs.uuid))
    assert response.status_code == 404
    assert f"You have no run with the id {theirs.uuid}." in text(response)


def test_runs_of_different_agents_can_be_compared_and_it_says_so(
    alice_client, make_agent, make_execution
):
    one = make_execution(make_agent(name="fetch"), ago=timedelta(hours=2))
    other = make_execution(make_agent(name="report"))
    page = text(alice_client.get(compare_url(one, other)))
    assert "These are runs of different agents" in page


def test_the_execution_page_offers_to_compare(alice_client, make_agent, make_execution):
    execution = make_execution(make_agent())
    page = text(alice_client.get(reverse("executions:detail", args=[execution.uuid])))
    assert 'id="compare-with"' in page
    assert pick_url(execution, "previous").replace("&", "&amp;") in page
    assert pick_url(execution, "last-success") in page


def test_previous_goes_to_the_run_of_the_agent_just_before(
    alice_client, make_agent, make_execution
):
    agent = make_agent()
    first = make_execution(agent, ago=timedelta(hours=3))
    second = make_execution(agent, ago=timedelta(hours=2))
    make_execution(make_agent(), ago=timedelta(hours=1, minutes=30))  # another agent's
    third = make_execution(agent, "failed", ago=timedelta(hours=1))
    response = alice_client.get(pick_url(third, "previous"))
    assert response.status_code == 302
    assert response["Location"] == compare_url(third, second)
    response = alice_client.get(pick_url(first, "previous"))
    assert response.status_code == 404
    assert "This agent has no run before this one." in text(response)


def test_last_success_goes_to_the_agents_latest_success(alice_client, make_agent, make_execution):
    agent = make_agent()
    success = make_execution(agent, ago=timedelta(hours=3))
    make_execution(agent, "failed", ago=timedelta(hours=2))
    failed = make_execution(agent, "failed", ago=timedelta(hours=1))
    response = alice_client.get(pick_url(failed, "last-success"))
    assert response["Location"] == compare_url(failed, success)
    response = alice_client.get(pick_url(success, "last-success"))
    assert response.status_code == 404
    assert "This agent has no other run that succeeded." in text(response)


def test_a_run_given_by_its_address_or_id(alice_client, make_agent, make_execution):
    agent = make_agent()
    one, other = make_execution(agent), make_execution(agent)
    address = f"http://testserver/executions/{other.uuid}/"
    pick = reverse("executions:compare-pick", args=[one.uuid])
    response = alice_client.get(pick, {"with": address})
    assert response["Location"] == compare_url(one, other)
    response = alice_client.get(pick_url(one, other.uuid))
    assert response["Location"] == compare_url(one, other)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "Give the id or the address of the run to compare with."),
        ("yesterday", "is not a run&#x27;s id or address"),
    ],
)
def test_what_cannot_be_read_is_said_with_the_form_again(
    alice_client, make_agent, make_execution, given, message
):
    execution = make_execution(make_agent())
    response = alice_client.get(pick_url(execution, given))
    assert response.status_code == 400
    assert message in text(response)
    assert 'id="compare-other"' in text(response)


def test_a_run_cannot_be_compared_with_itself(alice_client, make_agent, make_execution):
    execution = make_execution(make_agent())
    response = alice_client.get(pick_url(execution, execution.uuid))
    assert response.status_code == 400
    assert "That is this run" in text(response)


def test_attempts_timings_and_logs_are_side_by_side(alice_client, make_agent, make_execution):
    agent = make_agent(max_retries=2)
    one = make_execution(agent, ago=timedelta(hours=1), seconds=2)
    other = make_execution(agent, "failed", attempt=3, seconds=6, waited=4, error_category="auth")
    response = alice_client.get(compare_url(one, other))
    c = response.context["c"]
    assert [(a is not None, b is not None) for a, b in c.attempts] == [
        (True, True),
        (False, True),
        (False, True),
    ]
    later = c.after
    assert later.queued == timedelta(seconds=4)
    assert [row.attempt.outcome for row in later.attempts] == ["failed", "failed", "failed"]
    # Before attempts 2 and 3 it waited to retry, as its events say.
    assert later.attempts[1].waits == ["Waiting to retry"]
    assert later.total == later.execution.finished_at - later.execution.created_at
    page = text(response)
    assert "no attempt 2" in page
    assert "waiting to retry" in page
    assert 'id="compare-timings"' in page


def test_the_compare_address_alone_shows_the_form(alice_client, make_agent, make_execution):
    execution = make_execution(make_agent())
    response = alice_client.get(reverse("executions:compare-pick", args=[execution.uuid]))
    assert response.status_code == 200
    assert 'id="compare-other"' in text(response)
