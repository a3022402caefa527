"""The bulk actions' pages (executions.bulk_views): the preview from the list's filters, the
confirm, the action's page and its polled progress; only the owner's own executions."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from executions.bulk import bulk_action_run
from executions.models import BulkAction, Execution

pytestmark = pytest.mark.django_db

LIST = reverse("executions:list")
NEW = reverse("executions:bulk-new")


@pytest.fixture
def failing(make_agent):
    return make_agent(name="nightly-sync")


def listed(client, params) -> set[int]:
    return {e.pk for e in client.get(LIST, params).context["rows"]}


def test_the_list_offers_to_act_on_what_its_filters_select(alice_client, failing):
    page = alice_client.get(LIST, {"status": "failed"}).content.decode()
    assert f'href="{NEW}?action=retry&amp;status=failed"' in page
    assert f'href="{NEW}?action=cancel&amp;status=failed"' in page
    assert "Every execution that matches these filters" in page


def test_the_preview_counts_what_the_list_shows_and_offers_to_confirm(
    alice_client, failing, make_agent, make_execution
):
    other = make_agent(name="report")
    wanted = {make_execution(failing, "failed", error_category="timeout").pk for _ in range(3)}
    make_execution(failing, "failed", error_category="auth")
    make_execution(other, "failed", error_category="timeout")
    make_execution(failing, "failed", error_category="timeout", ago=timedelta(days=3))
    params = {"agent": str(failing.uuid), "error_category": "timeout", "range": "24h"}
    assert listed(alice_client, params) == wanted

    response = alice_client.get(NEW, {"action": "retry", **params})
    assert response.status_code == 200
    page = response.content.decode()
    assert "This will retry 3 executions." in page
    assert "Retry 3 executions</button>" in page
    assert "nightly-sync" in page and "The agent took too long" in page
    assert "runs that fail after that are not swept in" in page
    assert response.context["preview"].count == 3


def test_confirming_creates_the_action_and_lands_on_its_page(
    alice_client, alice, failing, make_execution
):
    failed = [make_execution(failing, "failed") for _ in range(2)]
    preview = alice_client.get(NEW, {"action": "retry", "status": "failed"}).context
    response = alice_client.post(
        NEW, {"action": "retry", "filter": preview["filter_json"], "previewed": "2"}
    )
    action = BulkAction.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("executions:bulk", args=[action.uuid])
    assert (action.owner, action.via, action.total, action.previewed) == (alice, "page", 2, 2)
    assert action.filter == {"status": ["failed"]}

    page = alice_client.get(response["Location"]).content.decode()
    assert "Asked by alice on the executions page" in page
    assert "0 of 2 done" in page
    assert 'hx-trigger="every 1s"' in page

    bulk_action_run(bulk_id=action.pk, max_seconds=60)
    live = alice_client.get(reverse("executions:bulk-live", args=[action.uuid])).content.decode()
    assert "2 of 2 done" in live and "hx-trigger" not in live
    assert 'data-status="done"' in live
    assert Execution.objects.filter(retry_of__in=failed).count() == 2
    assert "retry of 2, done" in alice_client.get(LIST).content.decode()


def test_a_time_range_is_kept_as_the_times_it_meant_when_previewed(
    alice_client, failing, make_execution
):
    make_execution(failing, "failed", ago=timedelta(minutes=30))
    preview = alice_client.get(NEW, {"action": "retry", "range": "1h"}).context["preview"]
    after = timezone.datetime.fromisoformat(preview.filter["created_after"])
    assert abs((timezone.now() - timedelta(hours=1) - after).total_seconds()) < 60
    assert preview.count == 1


def test_a_cancel_preview_uses_the_danger_button(alice_client, failing, make_execution):
    make_execution(failing, "queued", hold=True)
    page = alice_client.get(NEW, {"action": "cancel"}).content.decode()
    assert "This will cancel 1 execution." in page
    assert 'class="btn btn-danger" type="submit" id="bulk-confirm">Cancel 1 execution' in page


def test_nothing_to_do_offers_no_button(alice_client, failing, make_execution):
    make_execution(failing, "succeeded")
    page = alice_client.get(NEW, {"action": "retry"}).content.decode()
    assert "Nothing to retry" in page and "bulk-confirm" not in page
    assert "1 is neither failed nor cancelled" in page


def test_filters_that_are_not_valid_are_refused_not_widened(alice_client, failing, make_execution):
    make_execution(failing, "failed")
    response = alice_client.get(NEW, {"action": "retry", "status": "exploded"})
    assert response.status_code == 422
    assert "Some filters are not valid" in response.content.decode()
    assert "bulk-confirm" not in response.content.decode()


def test_a_tampered_confirm_is_refused_in_words(alice_client, failing):
    bad = alice_client.post(NEW, {"action": "retry", "filter": "{not json", "previewed": "1"})
    assert bad.status_code == 400 and "could not be read" in bad.content.decode()
    unknown = alice_client.post(
        NEW, {"action": "retry", "filter": '{"colour": "red"}', "previewed": "1"}
    )
    assert unknown.status_code == 422 and "Unknown filter" in unknown.content.decode()
    assert not BulkAction.objects.exists()


def test_bob_cannot_act_on_or_see_alices(client, bob, alice_client, failing, make_execution):
    failed = make_execution(failing, "failed")
    alice_client.post(NEW, {"action": "retry", "filter": "{}", "previewed": "1"})
    action = BulkAction.objects.get()
    client.force_login(bob)
    preview = client.get(NEW, {"action": "retry", "agent": str(failing.uuid)})
    # alice's agent is not one of bob's choices: the filter is not valid for him.
    assert preview.status_code == 422
    client.post(
        NEW, {"action": "retry", "filter": f'{{"agent": "{failing.uuid}"}}', "previewed": "1"}
    )
    theirs = BulkAction.objects.get(owner=bob)
    bulk_action_run(bulk_id=theirs.pk, max_seconds=60)
    theirs.refresh_from_db()
    assert (theirs.total, theirs.done) == (0, 0)
    assert Execution.objects.filter(retry_of=failed).count() == 0
    assert client.get(reverse("executions:bulk", args=[action.uuid])).status_code == 404
    assert client.get(reverse("executions:bulk-live", args=[action.uuid])).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"status": "failed"},
        {"trigger": "api"},
        {"error_category": "timeout"},
        {"q": "sync"},
        {"range": "24h"},
        {"slower_than": "2"},
        {"since": "2020-01-01", "until": "2100-01-01"},
    ],
)
def test_the_preview_counts_exactly_the_rows_the_list_shows(
    alice_client, failing, make_agent, make_execution, params
):
    other = make_agent(name="report")
    make_execution(failing, "failed", error_category="timeout", trigger="api", seconds=5)
    make_execution(failing, "failed", error_category="auth", ago=timedelta(days=2))
    make_execution(other, "failed", error_category="timeout", seconds=0.5)
    make_execution(other, "cancelled", trigger="api")
    rows = listed(alice_client, params)
    preview = alice_client.get(NEW, {"action": "retry", **params}).context["preview"]
    assert preview.matching == len(rows) > 0
