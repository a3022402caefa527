"""An agent's queue, limits, breaker, log level and retention through the API: read and written
like its other settings, refused with 422 on the field with the page's message, documented in
the OpenAPI schema."""

import pytest
import yaml
from django.core.management import call_command
from django.urls import reverse

from agents.models import Agent
from tests.agents.test_forms_limits import BAD, GOOD, function_form
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"
ECHO = {"name": "echo", "kind": "function", "config": {"function": "demo.echo"}}
# GOOD's values as the API takes them.
GOOD_JSON = {
    "max_concurrency": 3,
    "rate_limit": "5/min",
    "breaker_threshold": 4,
    "breaker_window": 120,
    "breaker_cooldown": 30,
    "log_level": "warning",
    "retain_succeeded_days": 7,
    "retain_failed_days": 60,
}


@pytest.fixture
def reports(settings):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Long reports", "concurrency": 2},
    }
    return "reports"


def test_the_settings_are_written_and_read_back(api):
    assert set(GOOD_JSON) == set(GOOD)
    response = api.post(AGENTS, {**ECHO, **GOOD_JSON})

    assert response.status_code == 201, response.content
    body = response.json()
    assert {name: body[name] for name in GOOD_JSON} == GOOD_JSON
    agent = Agent.objects.get(name="echo")
    assert (agent.max_concurrency, agent.rate_limit, agent.log_level) == (3, "5/min", "warning")


@pytest.mark.parametrize(
    ("typed", "kept"),
    [("5 / MINUTE", "5/min"), ("5/m", "5/min"), ("100/hours", None), ("2/S", "2/sec"),
     ("1/day", "1/day")],
)  # fmt: skip
def test_a_rate_is_kept_in_one_spelling(api, make_agent, typed, kept):
    agent = make_agent(name="echo")
    response = api.patch(f"{AGENTS}/{agent.uuid}", {"rate_limit": typed})
    if kept is None:  # not a period Conveyor knows: refused, nothing changed
        assert response.status_code == 422
        return
    assert response.status_code == 200, response.content
    assert response.json()["rate_limit"] == kept
    agent.refresh_from_db()
    assert agent.rate_limit == kept


def test_a_new_agent_has_no_limits_and_the_default_breaker_settings(api, settings):
    body = api.post(AGENTS, ECHO).json()

    assert body["queue"] == settings.CONVEYOR_EXECUTIONS_QUEUE
    assert [body[name] for name in GOOD_JSON] == [None, "", 0, 300, 60, "debug", None, None]


def test_null_and_empty_take_a_limit_away(api, make_agent):
    agent = make_agent(name="echo", max_concurrency=2, rate_limit="1/sec", retain_failed_days=9)

    response = api.patch(
        f"{AGENTS}/{agent.uuid}",
        {"max_concurrency": None, "rate_limit": "", "retain_failed_days": None},
    )

    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert (agent.max_concurrency, agent.rate_limit, agent.retain_failed_days) == (None, "", None)


@pytest.mark.parametrize(("name", "bad"), BAD.items(), ids=BAD.keys())
def test_a_bad_value_is_a_422_on_its_field_with_the_page_s_message(api, alice_client, name, bad):
    value, message = bad
    value = int(value) if value.isdigit() else value

    response = api.post(AGENTS, {**ECHO, name: value})

    assert response.status_code == 422, response.content
    assert error_of(response)["details"][name] == [message]
    # The page says the same.
    page = alice_client.post(
        reverse("agents:create", args=["function"]), function_form(**{name: bad[0]})
    )
    assert page.context["form"].errors[name] == [message]
    assert not Agent.objects.filter(name__in=["echo", "mailer"]).exists()


def test_an_unknown_queue_is_a_422_listing_the_declared_ones(api, settings):
    settings.CONVEYOR_QUEUES = {
        settings.CONVEYOR_EXECUTIONS_QUEUE: {"description": "The default queue.",
                                             "concurrency": None},
        "reports": {"description": "Long reports", "concurrency": 2},
    }  # fmt: skip

    response = api.post(AGENTS, {**ECHO, "queue": "nightly"})

    assert response.status_code == 422
    assert error_of(response)["details"]["queue"] == [
        "“nightly” is not one of this installation's queues. Choose one of: "
        f"“{settings.CONVEYOR_EXECUTIONS_QUEUE}” (The default queue), "
        "“reports” (Long reports; at most 2 at once)."
    ]


def test_a_declared_queue_is_taken(api, reports):
    response = api.post(AGENTS, {**ECHO, "queue": "reports"})
    assert response.status_code == 201, response.content
    assert response.json()["queue"] == "reports"


def test_the_schema_documents_the_settings_their_ranges_and_the_declared_queues(tmp_path, reports):
    path = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(path))
    agent = yaml.safe_load(path.read_text())["components"]["schemas"]["AgentRequest"]
    fields = agent["properties"]

    assert fields["max_concurrency"]["minimum"] == 1
    assert fields["max_concurrency"]["maximum"] == 1000
    assert fields["max_concurrency"]["nullable"] is True
    assert (fields["breaker_threshold"]["minimum"], fields["breaker_threshold"]["maximum"]) == (
        0,
        100,
    )
    assert fields["retain_failed_days"]["maximum"] == 3650
    assert "e.g. 5/min" in fields["rate_limit"]["description"]
    assert "log_level" in fields
    assert "`reports` (Long reports; at most 2 at once)" in fields["queue"]["description"]
