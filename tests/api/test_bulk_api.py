"""Bulk actions through the API (POST /executions/bulk, GET /executions/bulk/{id}): preview,
create, progress, the filter's errors, and only the caller's own executions."""

import pytest

from executions.bulk import bulk_action_run
from executions.models import BulkAction, Execution
from tests.conftest import error_of

from .conftest import ApiClient

pytestmark = pytest.mark.django_db

BULK = "/api/v1/executions/bulk"


@pytest.fixture
def failing(make_agent):
    return make_agent(name="nightly-sync")


@pytest.fixture
def three_failed(failing, make_execution):
    return [make_execution(failing, "failed", error_category="timeout") for _ in range(3)]


def test_a_preview_counts_and_changes_nothing(api, failing, three_failed, make_execution):
    make_execution(failing, "succeeded")
    response = api.post(
        BULK, {"action": "retry", "filter": {"agent": str(failing.uuid)}, "preview": True}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["matching"], body["count"]) == (4, 3)
    assert body["message"] == "This will retry 3 executions."
    assert body["left_out"] == ["1 is neither failed nor cancelled"]
    assert body["filter"] == {"agent": str(failing.uuid)}
    assert body["too_many"] is False
    assert not BulkAction.objects.exists()
    assert not Execution.objects.filter(trigger="retry").exists()


def test_an_action_is_accepted_and_its_progress_is_shown_at_its_address(
    api, alice, failing, three_failed
):
    wanted = {"status": ["failed"], "error_category": ["timeout"]}
    response = api.post(BULK, {"action": "retry", "filter": wanted})
    assert response.status_code == 202, response.content
    body = response.json()
    action = BulkAction.objects.get()
    assert body["id"] == str(action.uuid)
    assert response["Location"] == body["url"] == f"http://testserver{BULK}/{action.uuid}"
    assert (body["status"], body["total"], body["done"], body["by"]) == ("pending", 3, 0, "alice")
    assert body["via"] == "api" and body["filter"] == wanted
    assert action.owner == alice

    bulk_action_run(bulk_id=action.pk, max_seconds=60)
    shown = api.get(body["url"]).json()
    assert (shown["status"], shown["done"], shown["processed"], shown["percent"]) == (
        "done",
        3,
        3,
        100,
    )
    assert shown["is_final"] is True and shown["finished_at"]
    assert Execution.objects.filter(retry_of__in=three_failed).count() == 3

    # The same request again: nothing to do, said as the preview says it; no action recorded.
    again = api.post(BULK, {"action": "retry", "filter": wanted})
    assert again.status_code == 409, again.content
    assert error_of(again)["code"] == "nothing_to_do"
    words = "Nothing to retry: the 3 executions this filter selects are already retried."
    assert error_of(again)["message"] == words
    preview = api.post(BULK, {"action": "retry", "filter": wanted, "preview": True}).json()
    assert (preview["count"], preview["message"]) == (0, words)
    listed = api.get(BULK).json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]

    # What it made, exactly: the list's filter bulk=<id>.
    made = api.get("/api/v1/executions", {"bulk": body["id"]}).json()["results"]
    assert {row["retry_of"] for row in made} == {str(e.uuid) for e in three_failed}


def test_a_cancel_by_filter(api, failing, make_execution):
    queued = [make_execution(failing, "queued", hold=True) for _ in range(2)]
    body = api.post(BULK, {"action": "cancel", "filter": {"status": "queued"}}).json()
    bulk_action_run(bulk_id=BulkAction.objects.get(uuid=body["id"]).pk, max_seconds=60)
    assert api.get(body["url"]).json()["done"] == 2
    assert {e.status for e in Execution.objects.filter(pk__in=[q.pk for q in queued])} == {
        "cancelled"
    }


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"action": "delete"}, "action", "action: Unknown action “delete”: give retry or cancel."),
        ({}, "action", "action: Give an action: retry or cancel."),
        (
            {"action": "retry", "filter": ["failed"]},
            "filter",
            'filter: The filter must be an object, e.g. {"status": ["failed"]}.',
        ),
        ({"action": "retry", "filter": {"stauts": "failed"}}, "filter.stauts", "Unknown filter"),
        (
            {"action": "retry", "filter": {"status": "exploded"}},
            "filter.status",
            "status: “exploded” is not one of the choices: queued, running, retrying, succeeded, "
            "failed, cancelled.",
        ),
        (
            {"action": "retry", "filter": {"agent": ["a", "b"]}},
            "filter.agent",
            "agent: Give one value, not several.",
        ),
        (
            {"action": "retry", "filter": {"agent": "00000000-0000-0000-0000-000000000000"}},
            "filter.agent",
            "agent: No agent of yours has this id.",
        ),
        ({"action": "retry", "filter": {"agent": "x"}}, "filter.agent", "valid UUID"),
        (
            {"action": "retry", "filter": {"created_before": "soon"}},
            "filter.created_before",
            "valid date",
        ),
        ({"action": "retry", "filter": {}, "dry_run": True}, "dry_run", "Unknown field"),
    ],
)
def test_a_request_that_does_not_parse_is_a_422_naming_the_field(api, body, field, words):
    for preview in (True, False):
        response = api.post(BULK, {**body, "preview": preview})
        assert response.status_code == 422, response.content
        error = error_of(response)
        assert field in error["details"], error
        assert words in error["message"] or words in str(error["details"]), error
        # The message is the first detail, named: the same words and case.
        (name, messages), *_ = error["details"].items()
        assert error["message"] == f"{name.removeprefix('filter.')}: {' '.join(messages)}"
    assert not BulkAction.objects.exists()


def test_more_than_one_action_covers_is_a_422(api, failing, make_execution, monkeypatch):
    from executions import bulk

    monkeypatch.setattr(bulk, "BULK_MAX", 1)
    make_execution(failing, "failed")
    make_execution(failing, "failed")
    assert api.post(BULK, {"action": "retry", "preview": True}).json()["too_many"] is True
    response = api.post(BULK, {"action": "retry"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "too_many"
    assert "Narrow the filter" in error_of(response)["message"]


def test_bob_cannot_see_or_act_on_alices_executions(api, bob, make_token, failing, three_failed):
    as_bob = ApiClient(make_token(bob))
    preview = as_bob.post(
        BULK, {"action": "retry", "filter": {"agent": str(failing.uuid)}, "preview": True}
    )
    assert preview.status_code == 422
    assert error_of(preview)["message"] == "agent: No agent of yours has this id."
    everything = as_bob.post(BULK, {"action": "retry", "filter": {}})
    assert everything.status_code == 409
    assert error_of(everything)["message"] == "Nothing to retry: this filter selects no executions."
    assert not Execution.objects.filter(retry_of__in=three_failed).exists()

    # And alice's action is a 404 to bob, as an unknown one; what it made is not listed for him.
    mine = api.post(BULK, {"action": "retry", "filter": {}}).json()
    bulk_action_run(bulk_id=BulkAction.objects.get(uuid=mine["id"]).pk, max_seconds=60)
    assert api.get(mine["url"]).status_code == 200
    assert as_bob.get(mine["url"]).status_code == 404
    assert as_bob.get(f"{BULK}/not-an-id").status_code == 404
    assert as_bob.get(BULK).json()["results"] == []
    assert as_bob.get("/api/v1/executions", {"bulk": mine["id"]}).json()["results"] == []
    assert len(api.get("/api/v1/executions", {"bulk": mine["id"]}).json()["results"]) == 3


def test_the_list_filters_the_same_way(api, failing, make_execution):
    """GET /executions takes the filters a bulk action takes, category and search included."""
    timeout = make_execution(failing, "failed", error_category="timeout")
    make_execution(failing, "failed", error_category="auth")
    listed = api.get("/api/v1/executions", {"error_category": "timeout", "q": "nightly"})
    assert [row["id"] for row in listed.json()["results"]] == [str(timeout.uuid)]
    preview = api.post(
        BULK,
        {
            "action": "retry",
            "filter": {"error_category": "timeout", "q": "nightly"},
            "preview": True,
        },
    )
    assert preview.json()["count"] == 1


def test_the_list_and_a_bulk_action_read_repeated_and_unknown_parameters_alike(
    api, failing, make_agent, make_execution
):
    """Several values of status, trigger, wait_reason or error_category: any of them; a second
    value of any other name, or a name the filter does not know: refused, named."""
    other = make_agent(name="report")
    failed, cancelled = make_execution(failing, "failed"), make_execution(other, "cancelled")
    make_execution(failing, "succeeded")

    listed = api.get("/api/v1/executions?status=failed&status=cancelled").json()["results"]
    assert {row["id"] for row in listed} == {str(failed.uuid), str(cancelled.uuid)}
    preview = api.post(
        BULK, {"action": "retry", "filter": {"status": ["failed", "cancelled"]}, "preview": True}
    ).json()
    assert preview["count"] == 2

    two_agents = api.get(f"/api/v1/executions?agent={failing.uuid}&agent={other.uuid}")
    assert two_agents.status_code == 400
    assert error_of(two_agents)["message"] == "agent: Give one value, not several."
    assert error_of(two_agents)["details"] == {"agent": ["Give one value, not several."]}
    refused = api.post(
        BULK,
        {"action": "retry", "filter": {"agent": [str(failing.uuid), str(other.uuid)]}},
    )
    assert error_of(refused)["message"] == "agent: Give one value, not several."

    typo = api.get("/api/v1/executions?stauts=running")
    assert typo.status_code == 400
    assert error_of(typo)["message"].startswith("stauts: Unknown filter. Known ones: q, status,")
    # The list's own parameters are not filters, and are not refused.
    assert api.get("/api/v1/executions?limit=1&format=json").status_code == 200
