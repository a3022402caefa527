"""Agents through the API: create, read, change, delete, pause and resume, stats; config
checked by the kind's schema, secrets write-only."""

from datetime import timedelta

import pytest

from agents.models import Agent
from executions.services import execution_cancel, execution_request
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/agents"


def url(agent, suffix=""):
    return f"{AGENTS}/{agent.uuid}{suffix}"


def test_creating_an_agent_answers_201_with_it_and_its_location(api, alice):
    response = api.post(
        AGENTS,
        {
            "name": "echo",
            "kind": "function",
            "config": {"function": "demo.echo"},
            "max_retries": 2,
            "retry_on": ["network", "timeout"],
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    agent = Agent.objects.get(owner=alice, name="echo")
    assert body["id"] == str(agent.uuid)
    assert response["Location"] == body["url"] == f"http://testserver{url(agent)}"
    assert body["config"] == {"function": "demo.echo"}
    assert body["max_retries"] == 2 and body["retry_on"] == ["network", "timeout"]
    assert body["webhook"] == {
        "enabled": False,
        "url": f"http://testserver/hooks/{agent.uuid}/",
        "rotation_in_progress": False,
    }


def test_config_is_checked_by_the_kinds_schema_with_field_names(api):
    response = api.post(AGENTS, {"name": "caller", "kind": "http", "config": {"url": "ftp://x"}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid"
    assert "config.url" in error["details"]
    assert not Agent.objects.filter(name="caller").exists()


def test_an_internal_address_is_refused_at_save_time_as_a_422_on_config_url(api, settings):
    settings.CONVEYOR_OUTBOUND_ALLOW = []
    body = {"name": "inside", "kind": "http", "config": {"url": "http://169.254.169.254/"}}

    response = api.post(AGENTS, body)

    assert response.status_code == 422
    messages = error_of(response)["details"]["config.url"]
    assert messages == [
        "The address “169.254.169.254” is a private or internal network address "
        "(169.254.169.254 — a cloud metadata service), which Conveyor does not call for safety. "
        "An operator can allow it with CONVEYOR_OUTBOUND_ALLOW."
    ]
    assert not Agent.objects.filter(name="inside").exists()


def test_an_address_the_operator_allowed_is_accepted(api, settings):
    settings.CONVEYOR_OUTBOUND_ALLOW = ["127.0.0.1"]
    body = {"name": "local", "kind": "http", "config": {"url": "http://127.0.0.1:8080/"}}

    response = api.post(AGENTS, body)

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "function", "config": {"function": "demo.echo"}}, "name"),
        ({"name": "x", "kind": "teleport"}, "kind"),
        ({"name": "x", "kind": "function", "config": ["not", "an", "object"]}, "config"),
        ({"name": "x", "kind": "function", "config": {"function": "nope"}}, "config.function"),
        ({"name": "bad/name", "kind": "function", "config": {"function": "demo.echo"}}, "name"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"}, "timeout": 0},
         "timeout"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"},
          "timeout": 10**9}, "timeout"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"},
          "retry_on": ["sunspots"]}, "retry_on"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"},
          "secrets": {"bad name!": "v"}}, "secrets"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"},
          "priority": 10}, "priority"),
        ({"name": "x", "kind": "function", "config": {"function": "demo.echo"},
          "queue": "test-maintenance"}, "queue"),
    ],
)  # fmt: skip
def test_invalid_agents_are_422_naming_the_field(api, body, field):
    response = api.post(AGENTS, body)
    assert response.status_code == 422, response.content
    assert field in error_of(response)["details"]


def test_a_duplicate_name_is_a_422_on_the_name(api, make_agent, alice):
    make_agent(alice, name="echo")
    response = api.post(
        AGENTS, {"name": "echo", "kind": "function", "config": {"function": "demo.echo"}}
    )
    assert response.status_code == 422
    assert "already have an agent" in error_of(response)["message"]


def test_secrets_are_write_only_and_merge(api, alice):
    response = api.post(
        AGENTS,
        {
            "name": "caller",
            "kind": "function",
            "config": {"function": "demo.echo"},
            "secrets": {"api_token": "s3cret-value", "other": "also-secret"},
        },
    )
    assert response.status_code == 201
    assert "s3cret-value" not in response.content.decode()
    assert "secrets" not in response.json()
    assert response.json()["secret_names"] == ["api_token", "other"]
    agent = Agent.objects.get(name="caller")

    response = api.patch(url(agent), {"secrets": {"other": None, "new": "n3w"}})
    assert response.status_code == 200
    assert response.json()["secret_names"] == ["api_token", "new"]
    agent.refresh_from_db()
    assert agent.secrets.reveal() == {"api_token": "s3cret-value", "new": "n3w"}
    for body in (api.get(url(agent)).content, api.get(AGENTS).content):
        assert b"s3cret-value" not in body and b"n3w" not in body


def test_patch_changes_only_what_it_names(api, make_agent, alice):
    agent = make_agent(alice, name="echo", description="keep me")
    response = api.patch(url(agent), {"timeout": 45, "priority": 7, "overlap_policy": "queue"})
    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert (agent.timeout, agent.priority, agent.description) == (45, 7, "keep me")
    assert agent.overlap_policy == "queue"


def test_a_bad_patch_changes_nothing(api, make_agent, alice):
    agent = make_agent(alice, name="echo")
    response = api.patch(url(agent), {"config": {"function": "nope"}, "timeout": 45})
    assert response.status_code == 422
    assert "config.function" in error_of(response)["details"]
    agent.refresh_from_db()
    assert agent.config == {"function": "demo.echo"} and agent.timeout == 30


def test_put_needs_name_kind_and_config(api, make_agent, alice):
    agent = make_agent(alice, name="echo")
    response = api.put(url(agent), {"name": "renamed"})
    assert response.status_code == 422
    assert {"kind", "config"} <= set(error_of(response)["details"])
    response = api.put(
        url(agent), {"name": "renamed", "kind": "function", "config": {"function": "demo.slow"}}
    )
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.name == "renamed" and agent.config == {"function": "demo.slow"}


def test_the_list_shows_ones_own_agents_by_name_in_pages(api, make_agent, alice, bob):
    for n in range(5):
        make_agent(alice, name=f"agent-{n}")
    make_agent(bob, name="bobs-agent")
    first = api.get(AGENTS, {"limit": 2}).json()
    assert [a["name"] for a in first["results"]] == ["agent-0", "agent-1"]
    second = api.get(first["next"]).json()
    assert [a["name"] for a in second["results"]] == ["agent-2", "agent-3"]
    third = api.get(second["next"]).json()
    assert [a["name"] for a in third["results"]] == ["agent-4"]
    assert third["next"] is None


def test_pause_refuses_runs_until_resume(api, make_agent, alice):
    agent = make_agent(alice)
    assert api.post(url(agent, "/pause")).json()["is_paused"] is True
    refused = api.post(url(agent, "/runs"), {"input": {}})
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "agent_paused"
    assert api.post(url(agent, "/resume")).json()["is_paused"] is False
    assert api.post(url(agent, "/runs"), {"input": {}}).status_code == 202


def test_deleting_an_agent_with_active_runs_is_refused_then_allowed(api, make_agent, alice):
    agent = make_agent(alice)
    execution = execution_request(agent=agent, trigger="manual")
    response = api.delete(url(agent))
    assert response.status_code == 409
    assert error_of(response)["code"] == "agent_busy"
    execution_cancel(execution=execution)
    assert api.delete(url(agent)).status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert api.get(url(agent)).status_code == 404


def test_a_refused_delete_says_why_in_the_services_words(api, make_agent, make_execution, alice):
    agent = make_agent(alice, name="busy-one")
    make_execution(agent, "running")
    make_execution(agent, "retrying")

    response = api.delete(url(agent))

    assert response.status_code == 409
    assert error_of(response)["message"] == (
        "“busy-one” has 2 runs in progress (queued, running or retrying): cancel them, or wait "
        "for them to finish, before deleting it."
    )


def test_stats_count_runs_and_durations_over_the_window(api, make_agent, make_execution, alice):
    agent = make_agent(alice)
    for seconds, status, age in [(1, "succeeded", 1), (3, "succeeded", 2), (2, "failed", 3),
                                 (9, "succeeded", 24 * 10)]:  # fmt: skip
        make_execution(agent, status, trigger="api", ago=timedelta(hours=age), seconds=seconds)
    day = api.get(url(agent, "/stats"), {"window": "24h"}).json()
    assert day["window"] == "24h"
    assert (day["runs"], day["succeeded"], day["failed"]) == (3, 2, 1)
    assert day["success_rate"] == pytest.approx(2 / 3)
    assert day["p50_seconds"] == pytest.approx(2.0)
    month = api.get(url(agent, "/stats"), {"window": "30d"}).json()
    assert month["runs"] == 4 and month["p50_seconds"] == pytest.approx(3.0)
    default = api.get(url(agent, "/stats")).json()
    assert default["window"] == "7d" and default["runs"] == 3


def test_an_unknown_stats_window_is_a_400(api, make_agent, alice):
    response = api.get(url(make_agent(alice), "/stats"), {"window": "1y"})
    assert response.status_code == 400
    assert error_of(response)["details"] == {"window": ["One of 24h, 7d, 30d."]}


def test_stats_of_an_agent_without_runs_are_empty_not_an_error(api, make_agent, alice):
    body = api.get(url(make_agent(alice), "/stats")).json()
    assert body["runs"] == 0 and body["success_rate"] is None and body["p95_seconds"] is None


def test_an_agent_comes_with_the_input_its_function_expects(api, make_agent, alice):
    flaky = make_agent(alice, config={"function": "demo.flaky"})
    body = api.get(f"/api/v1/agents/{flaky.uuid}").json()
    assert body["input_example"] == {"fail_times": 2, "seconds": 0}
    run = api.post(f"/api/v1/agents/{flaky.uuid}/runs", {"input": body["input_example"]})
    assert run.status_code == 202
