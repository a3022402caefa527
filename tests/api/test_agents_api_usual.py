"""The owner's thresholds of "against its usual" (ops.baseline): on the agent form, through the
API and in the admin, checked by the one path (agents.services.agent_validate) with the model's
ranges and messages; an empty figure is not watched; the API's stats carry the comparison."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from ops.rollups import roll_up
from tests.agents.test_views_notifications import function_form
from tests.conftest import error_of
from tests.ops.test_baseline import runs, usual_runs

pytestmark = pytest.mark.django_db

NEW_FUNCTION = reverse("agents:create", args=["function"])


def test_a_new_agent_watches_its_p95_and_success_rate_by_default(make_agent):
    agent = make_agent(name="echo")
    assert (
        agent.regression_p95_percent,
        agent.regression_success_points,
        agent.regression_min_runs,
    ) == (50, 10, 20)


def test_the_form_saves_them_and_an_empty_figure_is_not_watched(alice_client):
    response = alice_client.post(
        NEW_FUNCTION,
        function_form(
            regression_p95_percent="",
            regression_success_points="25",
            regression_min_runs="",
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    agent = Agent.objects.get(name="mailer")
    assert (
        agent.regression_p95_percent,
        agent.regression_success_points,
        agent.regression_min_runs,
    ) == (None, 25, 20)  # a blank minimum keeps its value


def test_the_form_explains_them_in_words(alice_client):
    html = alice_client.get(NEW_FUNCTION).content.decode()
    assert "Against its usual" in html
    assert "you are told once on the channels above" in html
    assert 'name="agent-regression_p95_percent"' in html and 'max="1000"' in html


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("regression_p95_percent", 0),
        ("regression_p95_percent", 1001),
        ("regression_success_points", 101),
        ("regression_min_runs", 0),
    ],
)
def test_out_of_range_is_refused_with_the_same_words_on_the_page_and_through_the_api(
    alice_client, api, field, value
):
    page = alice_client.post(NEW_FUNCTION, function_form(**{field: str(value)}))
    assert page.status_code == 422
    (said,) = page.context["form"].errors[field]
    body = {"name": "echo", "kind": "function", "config": {"function": "demo.echo"}, field: value}
    response = api.post("/api/v1/agents", body)
    assert response.status_code in (400, 422)
    assert said in error_of(response)["details"][field]
    assert not Agent.objects.exists()


def test_the_api_reads_and_writes_them(api, make_agent):
    agent = make_agent(name="echo")
    response = api.patch(
        f"/api/v1/agents/{agent.uuid}",
        {"regression_p95_percent": None, "regression_success_points": 5, "regression_min_runs": 50},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (
        body["regression_p95_percent"],
        body["regression_success_points"],
        body["regression_min_runs"],
    ) == (None, 5, 50)


def test_the_api_stats_say_it_is_slower_than_usual(api, make_agent, make_execution):
    agent = make_agent(name="echo")
    now = timezone.now()
    usual_runs(make_execution, agent, end=now)
    runs(make_execution, agent, end=now, n=30, seconds=3.0)
    roll_up(until=now)
    baseline = api.get(f"/api/v1/agents/{agent.uuid}/stats").json()["baseline"]
    assert baseline["state"] == "worse"
    assert baseline["p95"]["state"] == "worse"
    assert baseline["p95"]["last_day_runs"] == 30 and baseline["p95"]["usual_runs"] == 60
    assert baseline["success"]["state"] == "ok"
    assert baseline["last_day"]["runs"] == 30 and baseline["usual"]["runs"] == 60
    assert baseline["regression"] is None  # until the next check


def test_the_api_stats_say_when_there_are_too_few_runs(api, make_agent, make_execution):
    agent = make_agent(name="echo")
    make_execution(agent, "succeeded", ago=timedelta(hours=2))
    baseline = api.get(f"/api/v1/agents/{agent.uuid}/stats").json()["baseline"]
    assert baseline["state"] == "not enough runs"
    assert baseline["p95"]["min_runs"] == 20


def test_the_agent_page_says_how_many_runs_are_still_needed(
    alice_client, make_agent, make_execution
):
    agent = make_agent(name="echo")
    for _ in range(3):
        make_execution(agent, "succeeded", ago=timedelta(hours=2))
    html = alice_client.get(f"/agents/{agent.uuid}/").content.decode()
    assert "Against its usual" in html
    assert (
        "Not enough runs to compare yet (0 of 20 needed in each: 3 over the last day, 0 over "
        "the 14 days before)." in html
    )


def test_the_admin_shows_them(staff_client, make_agent):
    agent = make_agent(name="echo")
    html = staff_client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()
    assert "Against its usual" in html
    assert 'name="regression_min_runs"' in html
