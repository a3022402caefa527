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
    assert response.context["problems"] == [
        "Status: “exploded” is not one of the choices: queued, running, retrying, succeeded, "
        "failed, cancelled."
    ]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("action=retry&bogus=1", "“bogus”: Unknown filter. Known ones: q, status,"),
        ("action=cancel&stauts=running", "“stauts”: Unknown filter. Known ones: q, status,"),
        (
            "action=retry&agent=00000000-0000-0000-0000-000000000000",
            "Agent: No agent of yours has this id.",
        ),
        ("action=retry&agent=not-an-id", "Agent: “not-an-id” is not a valid UUID."),
        ("action=retry&range=1h&range=24h", "Time: Give one value, not several."),
        ("action=retry&bulk=00000000-0000-0000-0000-000000000000", "Bulk action: No bulk action"),
    ],
)
def test_an_unknown_parameter_or_a_wrong_filter_is_refused_naming_it(
    alice_client, failing, make_execution, query, problem
):
    """A typo never widens the action to every execution: the page says which filter, and why."""
    make_execution(failing, "failed")
    make_execution(failing, "queued", hold=True)
    response = alice_client.get(f"{NEW}?{query}")
    page = response.content.decode()
    assert response.status_code == 422
    assert any(line.startswith(problem) for line in response.context["problems"]), response.context[
        "problems"
    ]
    assert "bulk-confirm" not in page and "all your executions" not in page
    assert not BulkAction.objects.exists()


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("action=delete&status=failed", "Unknown action “delete”: give retry or cancel."),
        ("status=failed", "Choose an action: retry or cancel."),
        ("action=retry&action=cancel", "action: Give one value, not several."),
    ],
)
def test_an_unknown_action_is_refused_not_taken_for_a_retry(
    alice_client, failing, make_execution, query, words
):
    make_execution(failing, "failed")
    response = alice_client.get(f"{NEW}?{query}")
    assert response.status_code == 400
    page = response.content.decode()
    assert words in page and "bulk-confirm" not in page and "This will" not in page


def test_several_statuses_select_any_of_them_on_the_list_and_the_preview(
    alice_client, failing, make_execution
):
    wanted = {make_execution(failing, "failed").pk, make_execution(failing, "cancelled").pk}
    make_execution(failing, "succeeded")
    query = "status=failed&status=cancelled"
    rows = {e.pk for e in alice_client.get(f"{LIST}?{query}").context["rows"]}
    assert rows == wanted
    listed_page = alice_client.get(f"{LIST}?{query}").content.decode()
    # Both stay selected, so filtering again keeps them.
    assert listed_page.count("selected>") >= 2 and 'name="status" id="id_status" multiple' in (
        listed_page
    )
    response = alice_client.get(f"{NEW}?action=retry&{query}")
    assert response.context["preview"].count == 2
    assert ("Status", "Failed, Cancelled") in response.context["filter_lines"]


def test_the_list_names_an_unknown_parameter_and_a_repeated_one(alice_client, failing):
    page = alice_client.get(f"{LIST}?stauts=running&agent={failing.uuid}&agent={failing.uuid}")
    text = page.content.decode()
    assert "“stauts”: Unknown filter." in text
    assert "Give one value, not several." in text


def test_confirming_when_nothing_is_left_to_do_creates_no_action(
    alice_client, failing, make_execution
):
    make_execution(failing, "failed")
    preview = alice_client.get(NEW, {"action": "retry", "status": "failed"}).context
    form = {"action": "retry", "filter": preview["filter_json"], "previewed": "1"}
    first = alice_client.post(NEW, form)
    assert first.status_code == 302
    bulk_action_run(bulk_id=BulkAction.objects.get().pk, max_seconds=60)
    again = alice_client.post(NEW, form)
    assert again.status_code == 409
    page = again.content.decode()
    assert "Nothing to retry: the execution this filter selects is already retried." in page
    assert "bulk-confirm" not in page
    assert BulkAction.objects.count() == 1
    assert "retry of 0" not in alice_client.get(LIST).content.decode()


def test_an_actions_page_links_to_exactly_what_it_made_or_cancelled(
    alice_client, alice, failing, make_execution
):
    from executions.services import execution_retry

    failed = [make_execution(failing, "failed") for _ in range(2)]
    by_hand = make_execution(failing, "failed")
    earlier = execution_retry(execution=by_hand, by="alice")  # a retry it did not make
    alice_client.post(
        NEW, {"action": "retry", "filter": '{"status": ["failed"]}', "previewed": "2"}
    )
    retry = BulkAction.objects.get()
    bulk_action_run(bulk_id=retry.pk, max_seconds=60)
    live = alice_client.get(reverse("executions:bulk-live", args=[retry.uuid])).content.decode()
    link = f'href="{LIST}?bulk={retry.uuid}"'
    assert link in live and "See the 2 retries it made" in live
    made = alice_client.get(LIST, {"bulk": str(retry.uuid)})
    assert {e.retry_of_id for e in made.context["rows"]} == {e.pk for e in failed}
    assert earlier.pk not in {e.pk for e in made.context["rows"]}
    assert "The retries made by the bulk retry of" in made.content.decode()

    # Cancel what it made: the filter bulk=<id> is a filter like the others.
    preview = alice_client.get(NEW, {"action": "cancel", "bulk": str(retry.uuid)})
    assert preview.context["preview"].count == 2
    assert "The retries made by the bulk retry of" in preview.content.decode()
    alice_client.post(
        NEW, {"action": "cancel", "filter": preview.context["filter_json"], "previewed": "2"}
    )
    cancel = BulkAction.objects.get(action="cancel")
    bulk_action_run(bulk_id=cancel.pk, max_seconds=60)
    page = alice_client.get(reverse("executions:bulk", args=[cancel.uuid])).content.decode()
    assert f'href="{LIST}?bulk={cancel.uuid}"' in page
    assert "See the 2 executions it cancelled" in page
    cancelled = alice_client.get(LIST, {"bulk": str(cancel.uuid)}).context["rows"]
    assert {e.pk for e in cancelled} == {e.pk for e in made.context["rows"]}
    assert earlier.pk not in {e.pk for e in cancelled}


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
    assert preview.context["problems"] == ["Agent: No agent of yours has this id."]
    confirm = client.post(
        NEW, {"action": "retry", "filter": f'{{"agent": "{failing.uuid}"}}', "previewed": "1"}
    )
    assert confirm.status_code == 422
    assert "agent: No agent of yours has this id." in confirm.content.decode()
    everything = client.post(NEW, {"action": "retry", "filter": "{}", "previewed": "1"})
    assert everything.status_code == 409  # none of his: nothing to do
    assert not BulkAction.objects.filter(owner=bob).exists()
    assert Execution.objects.filter(retry_of=failed).count() == 0
    # Nor what alice's action made.
    assert client.get(LIST, {"bulk": str(action.uuid)}).context["rows"] == []
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


def test_the_bulk_address_alone_leads_to_the_list(alice_client):
    response = alice_client.get(NEW)
    assert response.status_code == 302
    assert response["Location"] == reverse("executions:list")
