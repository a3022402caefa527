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

    # The same request again: accepted, and nothing to do.
    again = api.post(BULK, {"action": "retry", "filter": wanted}).json()
    assert again["total"] == 0
    listed = api.get(BULK).json()["results"]
    assert [row["id"] for row in listed] == [again["id"], body["id"]]


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
        ({"action": "delete"}, "action", "not a valid choice"),
        ({}, "action", "required"),
        ({"action": "retry", "filter": ["failed"]}, "filter", "dictionary"),
        ({"action": "retry", "filter": {"stauts": "failed"}}, "filter.stauts", "Unknown filter"),
        ({"action": "retry", "filter": {"status": "done"}}, "filter.status", "valid choice"),
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
    assert preview.json()["matching"] == 0
    body = as_bob.post(BULK, {"action": "retry", "filter": {}}).json()
    bulk_action_run(bulk_id=BulkAction.objects.get(uuid=body["id"]).pk, max_seconds=60)
    assert not Execution.objects.filter(retry_of__in=three_failed).exists()

    # And alice's action is a 404 to bob, as an unknown one.
    mine = api.post(BULK, {"action": "retry", "filter": {}}).json()
    assert api.get(mine["url"]).status_code == 200
    assert as_bob.get(mine["url"]).status_code == 404
    assert as_bob.get(f"{BULK}/not-an-id").status_code == 404
    assert [row["id"] for row in as_bob.get(BULK).json()["results"]] == [body["id"]]


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
