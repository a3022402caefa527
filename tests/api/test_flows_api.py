"""Flows through the API: flow agents through the agents endpoints (their steps checked when
saved, with the step named in the 422), a flow execution's steps in its detail, its steps'
executions listed by ``?parent=``, and retry and cancel of a flow."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command

from executions.flows import flow_start
from executions.models import Execution, FlowStep
from executions.services import execution_request
from tests.conftest import error_of, failure, flow_started, step_ended, wait_for

from .conftest import ApiClient

AGENTS = "/api/v1/agents"
EXECUTIONS = "/api/v1/executions"


def url(execution, suffix=""):
    return f"{EXECUTIONS}/{execution.uuid}{suffix}"


def flow_body(steps, **config):
    return {"name": "report", "kind": "flow", "config": {"steps": steps, **config}}


@pytest.fixture
def steps_agents(make_agent, alice):
    """Alice's agents that her flows run: ``fetch`` and ``send`` (echo), ``flaky``."""
    return {
        "fetch": make_agent(alice, name="fetch"),
        "send": make_agent(alice, name="send"),
        "flaky": make_agent(alice, name="flaky", config={"function": "demo.flaky"}),
    }


@pytest.fixture
def report_flow(make_agent, alice, steps_agents):
    """fetch -> a 60 s wait -> send, with a time limit of an hour."""
    return make_agent(
        alice,
        name="report",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "fetch", "input": {"page": "{{ input.page }}"}},
                {"key": "cool-off", "wait": {"seconds": 60}},
                {
                    "key": "send",
                    "agent": "send",
                    "input": {"body": "{{ steps.fetch.result.page }}"},
                    "retry": {"max_retries": 0},
                },
            ],
            "timeout": 3600,
        },
    )


# --- Flow agents --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_flow_is_created_like_any_agent_and_its_steps_agents_come_back_as_ids(api, steps_agents):
    response = api.post(
        AGENTS,
        flow_body(
            [
                {"key": "fetch", "agent": "Fetch", "input": {"page": "{{ input.page }}"}},
                {"key": "send", "agent": str(steps_agents["send"].uuid)},
            ]
        ),
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["kind"] == "flow"
    assert [step["agent"] for step in body["config"]["steps"]] == [
        str(steps_agents["fetch"].uuid),
        str(steps_agents["send"].uuid),
    ]
    assert body["config"]["result"] == "last"
    assert body["input_example"] == {"page": "…"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("steps", "config", "field", "words"),
    [
        (
            [
                {"key": "fetch", "agent": "fetch"},
                {"key": "send", "agent": "send", "input": {"b": "{{ steps.fecth.result }}"}},
            ],
            {},
            "config.steps.1.input",
            "there is no step “fecth” (steps whose results it can read: fetch)",
        ),
        (
            [
                {
                    "key": "both",
                    "parallel": [
                        {"key": "a", "agent": "fetch"},
                        {"key": "b", "agent": "send", "input": {"x": "{{ steps.a.result }}"}},
                    ],
                },
            ],
            {},
            "config.steps.0.parallel.1.input",
            "step “a” runs at the same time (same parallel group)",
        ),
        (
            [
                {"key": "fetch", "agent": "fetch", "input": {"b": "{{ steps.send.result }}"}},
                {"key": "send", "agent": "send"},
            ],
            {},
            "config.steps.0.input",
            "step “send” does not come before this one",
        ),
        ([{"key": "fetch", "agent": "ghost"}], {}, "config.steps.0.agent", "no agent “ghost”"),
        (
            [
                {"key": "fetch", "agent": "fetch"},
                {"key": "both", "parallel": [{"key": "a", "agent": "nobody"}]},
            ],
            {},
            "config.steps.1.parallel.0.agent",
            "no agent “nobody”",
        ),
        (
            [{"key": "fetch", "agent": "fetch", "retry": {"max_retries": 99}}],
            {},
            "config.steps.0.retry",
            "“max_retries” is a whole number from 0 to 10",
        ),
        ([{"key": "pause", "wait": {"seconds": 0}}], {}, "config.steps.0.wait", "“seconds”"),
        ({"fetch": "fetch"}, {}, "config.steps", "Give at least one step: a JSON list"),
        ([{"key": "fetch", "agent": "fetch"}], {"timeout": 10**9}, "config.timeout", "At most"),
        (
            [{"key": "fetch", "agent": "fetch"}],
            {"retry": {"tries": 2}},
            "config.retry",
            "Unknown retry setting: tries",
        ),
    ],
)
def test_a_flow_the_kind_refuses_is_a_422_naming_the_step_and_the_problem(
    api, steps_agents, steps, config, field, words
):
    response = api.post(AGENTS, flow_body(steps, **config))

    assert response.status_code == 422, response.content
    error = error_of(response)
    assert error["code"] == "invalid"
    assert field in error["details"], error
    assert any(words in message for message in error["details"][field]), error
    # The message people read names where and what.
    assert error["message"].startswith(f"{field}: ")
    assert words in error["message"]


@pytest.mark.django_db
def test_a_flow_cannot_run_someone_else_s_agent(api, bob_api, bob, make_agent):
    make_agent(bob, name="bobs-secret-job")

    response = api.post(AGENTS, flow_body([{"key": "a", "agent": "bobs-secret-job"}]))

    assert response.status_code == 422
    assert (
        "You have no agent “bobs-secret-job”."
        in error_of(response)["details"]["config.steps.0.agent"]
    )


@pytest.mark.django_db
def test_a_flow_changed_to_run_itself_is_refused(api, report_flow):
    config = {"steps": [{"key": "again", "agent": "report"}]}

    response = api.patch(f"{AGENTS}/{report_flow.uuid}", {"config": config})

    assert response.status_code == 422
    assert error_of(response)["details"]["config.steps.0.agent"] == ["A flow cannot run itself."]


# --- A flow execution and its steps -------------------------------------------------------


@pytest.mark.django_db
def test_a_flow_run_through_the_api_answers_with_no_steps_until_it_starts(api, report_flow):
    response = api.post(f"{AGENTS}/{report_flow.uuid}/runs", {"input": {"page": "home"}})

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["steps"] == []
    assert (body["parent"], body["step_key"], body["step_index"]) == (None, "", None)
    assert body["deadline_at"] is None  # set when it starts


@pytest.mark.django_db
def test_a_flow_s_detail_lists_its_steps_in_order_with_their_executions(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    fetch = step_ended(flow, "fetch", result={"page": "home"})

    body = api.get(url(flow)).json()

    assert body["status"] == "running"
    assert body["wait_reason"] == "pause"
    assert body["progress_message"] == "Step 2 of 3: waiting (cool-off)"
    assert body["deadline_at"] is not None
    steps = body["steps"]
    assert [(s["key"], s["type"], s["status"]) for s in steps] == [
        ("fetch", "run", "succeeded"),
        ("cool-off", "wait", "waiting"),
        ("send", "run", "pending"),
    ]
    assert steps[0]["execution"] == str(fetch.uuid)
    assert steps[0]["result"] == {"page": "home"}
    assert steps[0]["started_at"] and steps[0]["finished_at"]
    assert steps[1]["execution"] is None and steps[1]["wait_until"] is not None
    assert steps[2]["execution"] is None and steps[2]["started_at"] is None
    assert all(s["reused_from"] is None and s["group"] == "" for s in steps)
    assert [s["index"] for s in steps] == [0, 1, 2]


@pytest.mark.django_db
def test_a_step_s_execution_names_its_flow_and_its_step(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    fetch = FlowStep.objects.get(flow=flow, key="fetch").execution

    body = api.get(url(fetch)).json()

    assert body["trigger"] == "flow"
    assert body["parent"] == str(flow.uuid)
    assert (body["step_key"], body["step_index"]) == ("fetch", 0)
    assert body["input"] == {"page": "home"}
    assert body["steps"] is None  # not a flow


@pytest.mark.django_db
def test_a_parallel_group_s_members_follow_it_with_their_group(api, make_agent, alice):
    echo = make_agent(alice, name="echo")
    fan = make_agent(
        alice,
        name="fan",
        kind="flow",
        config={
            "steps": [
                {
                    "key": "both",
                    "parallel": [{"key": "a", "agent": echo.name}, {"key": "b", "agent": "echo"}],
                }
            ]
        },
    )
    flow = flow_started(fan, trigger="api")

    steps = api.get(url(flow)).json()["steps"]

    assert [(s["key"], s["type"], s["group"], s["status"]) for s in steps] == [
        ("both", "group", "", "running"),
        ("a", "run", "both", "running"),
        ("b", "run", "both", "running"),
    ]
    assert steps[0]["execution"] is None
    assert all(s["execution"] for s in steps[1:])


@pytest.mark.django_db
def test_a_failed_step_fails_the_flow_and_skips_the_rest(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    step_ended(flow, "fetch", error=failure("invalid_input", retryable=False, reason="No page."))

    body = api.get(url(flow)).json()

    assert body["status"] == "failed"
    assert body["error"]["category"] == "invalid_input"
    assert body["error"]["message"].startswith("Step “fetch” failed after 1 attempt")
    assert [(s["key"], s["status"]) for s in body["steps"]] == [
        ("fetch", "failed"),
        ("cool-off", "skipped"),
        ("send", "skipped"),
    ]
    assert body["steps"][1]["note"] == "Skipped: an earlier step did not succeed."


@pytest.mark.django_db
def test_other_executions_have_no_steps_and_lists_carry_none(api, make_agent, make_execution):
    execution = make_execution(make_agent(), "succeeded")

    assert api.get(url(execution)).json()["steps"] is None
    (row,) = api.get(EXECUTIONS).json()["results"]
    assert "steps" not in row
    assert row["parent"] is None and row["checkpoint_at"] is None


# --- ?parent= ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_parent_lists_a_flow_s_step_executions_and_none_the_top_level_ones(
    api, report_flow, make_agent, make_execution
):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    fetch = step_ended(flow, "fetch", result={"page": "home"})
    other = make_execution(make_agent(), "succeeded")

    def ids(**params):
        response = api.get(EXECUTIONS, params)
        assert response.status_code == 200, response.content
        return {row["id"] for row in response.json()["results"]}

    assert ids(parent=str(flow.uuid)) == {str(fetch.uuid)}
    assert ids(parent="none") == {str(flow.uuid), str(other.uuid)}
    assert ids(parent="NONE") == ids(parent="none")
    assert ids(parent=str(other.uuid)) == set()  # not a flow: no steps
    assert ids(parent=str(flow.uuid), status="queued") == set()
    assert ids() == {str(flow.uuid), str(fetch.uuid), str(other.uuid)}


@pytest.mark.django_db
def test_parent_of_someone_else_s_flow_lists_nothing(api, bob, make_agent, make_execution):
    bobs = make_agent(bob, name="bobs-flow-step")
    bobs_flow = make_agent(bob, name="bobs-flow", kind="flow", config={"steps": [
        {"key": "a", "agent": bobs.name}
    ]})  # fmt: skip
    flow = flow_started(bobs_flow, trigger="api")

    response = api.get(EXECUTIONS, {"parent": str(flow.uuid)})

    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.django_db
def test_a_parent_that_is_neither_an_id_nor_none_is_a_400_saying_what_it_takes(api):
    response = api.get(EXECUTIONS, {"parent": "my-flow"})

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_query"
    assert error["details"] == {
        "parent": [
            "“my-flow” is neither a flow execution's id nor “none” (executions no flow started)."
        ]
    }
    assert error["message"].startswith("parent: “my-flow”")


# --- Retry and cancel -----------------------------------------------------------------------


@pytest.mark.django_db
def test_retrying_a_failed_flow_answers_with_the_new_flow_execution(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    step_ended(flow, "fetch", error=failure("invalid_input", retryable=False))

    response = api.post(url(flow, "/retry"), {"input": {"page": "about"}})

    assert response.status_code == 201, response.content
    body = response.json()
    new = Execution.objects.get(uuid=body["id"])
    assert new.retry_of == flow and new.agent == report_flow
    assert (body["trigger"], body["status"], body["retry_of"]) == (
        "retry",
        "queued",
        str(flow.uuid),
    )
    assert body["input"] == {"page": "about"}
    assert body["steps"] == []


@pytest.mark.django_db
def test_a_retried_flow_shows_the_steps_it_reused(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    fetch = step_ended(flow, "fetch", result={"page": "home"})
    api.post(url(flow, "/cancel"))
    new = Execution.objects.get(uuid=api.post(url(flow, "/retry")).json()["id"])
    assert flow_start(execution_id=new.pk, expected_attempt=0, worker="test-worker")

    steps = api.get(url(new)).json()["steps"]

    assert (steps[0]["key"], steps[0]["status"]) == ("fetch", "succeeded")
    assert steps[0]["reused_from"] == str(fetch.uuid)
    assert steps[0]["execution"] is None  # not run again
    assert steps[0]["result"] == {"page": "home"}
    assert (steps[1]["key"], steps[1]["status"]) == ("cool-off", "waiting")


@pytest.mark.django_db
def test_cancelling_a_flow_cancels_its_running_step_and_skips_the_rest(api, report_flow):
    flow = flow_started(report_flow, {"page": "home"}, trigger="api")
    fetch = FlowStep.objects.get(flow=flow, key="fetch").execution

    response = api.post(url(flow, "/cancel"))

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "cancelled"
    assert [(s["key"], s["status"]) for s in body["steps"]] == [
        ("fetch", "cancelled"),
        ("cool-off", "skipped"),
        ("send", "skipped"),
    ]
    fetch.refresh_from_db()
    assert fetch.status == "cancelled"


# --- The schema -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema(tmp_path_factory, django_db_blocker):
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_the_schema_documents_the_flow_fields_as_nullable_where_they_may_be_null(schema):
    components = schema["components"]["schemas"]
    execution = components["Execution"]["properties"]
    for name in ("parent", "step_index", "checkpoint_at", "deadline_at"):
        assert execution[name].get("nullable") is True, name
    assert "steps" not in execution
    detail = components["ExecutionDetail"]
    assert detail["properties"]["steps"]["nullable"] is True
    assert "error_detail" in detail["properties"] and "error_detail" not in detail["required"]
    step = components[detail["properties"]["steps"]["items"]["$ref"].rsplit("/", 1)[1]]
    for name in ("execution", "reused_from", "started_at", "finished_at", "wait_until"):
        assert step["properties"][name].get("nullable") is True, name


def test_the_schema_documents_the_parent_filter_and_the_steps_of_a_detail(schema):
    listing = schema["paths"]["/api/v1/executions"]["get"]
    (parent,) = (p for p in listing["parameters"] if p["name"] == "parent")
    assert parent["schema"]["type"] == "string"
    assert "none" in parent["description"]
    detail = schema["paths"]["/api/v1/executions/{id}"]["get"]["responses"]["200"]
    assert detail["content"]["application/json"]["schema"]["$ref"].endswith("/ExecutionDetail")


# --- Through the real worker ----------------------------------------------------------------


def test_a_failed_flow_retried_through_the_api_resumes_at_the_failed_step(
    worker, make_agent, alice, make_token
):
    api = ApiClient(make_token(alice))
    make_agent(alice, name="fetch")
    make_agent(alice, name="flaky", config={"function": "demo.flaky"})
    flow_agent = make_agent(
        alice,
        name="resumable",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "fetch", "input": {"n": 1}},
                {
                    "key": "call",
                    "agent": "flaky",
                    "input": {"fail_times": "{{ input.fail_times }}"},
                    "retry": {"max_retries": 0},
                },
            ]
        },
    )
    first = api.post(f"{AGENTS}/{flow_agent.uuid}/runs", {"input": {"fail_times": 1}}).json()
    flow = wait_for(Execution.objects.get(uuid=first["id"]), "succeeded", "failed", timeout=60)
    assert flow.status == "failed", flow.error_message
    fetched = FlowStep.objects.get(flow=flow, key="fetch").execution

    response = api.post(url(flow, "/retry"), {"input": {"fail_times": 0}})

    assert response.status_code == 201, response.content
    new = Execution.objects.get(uuid=response.json()["id"])
    new = wait_for(new, "succeeded", "failed", timeout=60)
    assert new.status == "succeeded", new.error_message
    body = api.get(url(new)).json()
    assert body["result"] == {"succeeded_on_attempt": 1}
    assert [(s["key"], s["status"], s["reused_from"]) for s in body["steps"]] == [
        ("fetch", "succeeded", str(fetched.uuid)),
        ("call", "succeeded", None),
    ]
    # The reused step did not run again: one execution of "fetch" in all.
    assert Execution.objects.filter(agent__name="fetch").count() == 1


def test_a_checkpoint_s_time_shows_in_the_execution(worker, make_agent, alice, make_token):
    api = ApiClient(make_token(alice))
    counter = make_agent(alice, name="count", config={"function": "demo.count"})
    execution = execution_request(agent=counter, trigger="api", input={"to": 2, "seconds": 0})
    wait_for(execution, "succeeded", "failed")

    body = api.get(url(execution)).json()

    assert body["status"] == "succeeded", body["error"]
    assert body["checkpoint_at"] is not None
    assert body["result"]["counted"] == 2
