"""Why an execution waits, through the API: the detail's ``wait`` object (the explanation its
page shows) and the list's ``wait_reason`` filter."""

from __future__ import annotations

import pytest

from executions.models import Execution
from tests.conftest import error_of

pytestmark = pytest.mark.django_db

EXECUTIONS = "/api/v1/executions"


def waits(execution: Execution, reason: str, *, on: str = "") -> Execution:
    """Record a wait on a limit as the worker's claim records it (executions.capacity)."""
    Execution.objects.filter(pk=execution.pk).update(wait_reason=reason, waits_on=on)
    execution.refresh_from_db()
    return execution


@pytest.fixture
def full_agent(make_agent, make_execution):
    agent = make_agent(max_concurrency=2)
    holding = [make_execution(agent, "running") for _ in range(2)]
    waiting = waits(make_execution(agent, "queued"), "slot", on=f"agent:{agent.uuid}")
    return agent, holding, waiting


def test_the_detail_says_why_it_waits_and_for_which_runs(api, full_agent):
    agent, holding, waiting = full_agent

    wait = api.get(f"{EXECUTIONS}/{waiting.uuid}").json()["wait"]

    assert wait["reason"] == "slot"
    assert wait["label"] == "Waiting for a free slot (concurrency limit)"
    assert wait["message"].startswith("Waiting for a slot: 2 of 2 busy.")
    assert wait["until"] is None
    assert wait["waits_on"] == f"agent:{agent.uuid}"
    assert sorted(wait["holding"]) == sorted(str(r.uuid) for r in holding)


def test_a_run_that_does_not_wait_has_no_wait(api, full_agent):
    _, holding, _ = full_agent
    assert api.get(f"{EXECUTIONS}/{holding[0].uuid}").json()["wait"] is None


def test_the_list_filters_by_one_or_more_wait_reasons(api, full_agent, make_agent, make_execution):
    _, _, waiting = full_agent
    for_a_worker = make_execution(make_agent(), "queued")

    def ids(query):
        return [row["id"] for row in api.get(f"{EXECUTIONS}?{query}").json()["results"]]

    assert ids("wait_reason=slot") == [str(waiting.uuid)]
    assert set(ids("wait_reason=slot&wait_reason=broker")) == {
        str(waiting.uuid),
        str(for_a_worker.uuid),
    }
    assert ids("wait_reason=circuit") == []
    # The page's filter form sends unset fields empty: a query copied from it works here.
    assert ids("q=&status=&trigger=&wait_reason=slot&agent=") == [str(waiting.uuid)]
    assert ids("status=&wait_reason=") == ids("")


def test_an_unknown_wait_reason_is_a_400_naming_the_parameter(api):
    response = api.get(f"{EXECUTIONS}?wait_reason=nap")
    assert response.status_code == 400
    assert "wait_reason" in error_of(response)["message"]


def test_the_schema_documents_the_wait_and_the_filter():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)

    detail = schema["components"]["schemas"]["ExecutionDetail"]["properties"]["wait"]
    wait = schema["components"]["schemas"]["Wait"]["properties"]
    assert detail["nullable"] is True and "why and until when" in detail["description"]
    assert set(wait) == {"reason", "label", "message", "until", "waits_on", "holding"}
    parameters = schema["paths"]["/api/v1/executions"]["get"]["parameters"]
    wait_reason = next(p for p in parameters if p["name"] == "wait_reason")
    assert set(wait_reason["schema"]["items"]["enum"]) == {
        r for r in Execution.WaitReason.values if r
    }
