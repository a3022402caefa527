"""Bulk actions (executions.bulk) without a worker: the preview's counts, the batches through
the one retry and cancel services, idempotency, the set fixed at creation, owners' isolation."""

from datetime import timedelta

import pytest
from django.utils import timezone

from executions import bulk
from executions.bulk import BulkRefused, bulk_action_create, bulk_action_run, bulk_preview
from executions.filters import InvalidFilter, filter_executions
from executions.models import BulkAction, Execution
from executions.services import attempt_fail, execution_claim, execution_retry
from tests.conftest import failure

pytestmark = pytest.mark.django_db

EVERYTHING = 10**6  # seconds: a run that goes through every batch at once


@pytest.fixture
def failing(make_agent):
    return make_agent(name="nightly-sync")


@pytest.fixture
def two_hundred_failed(failing, make_execution):
    return [make_execution(failing, "failed", error_category="upstream_error") for _ in range(200)]


def run_to_the_end(action: BulkAction, **kwargs) -> BulkAction:
    assert bulk_action_run(bulk_id=action.pk, max_seconds=EVERYTHING, **kwargs) is True
    action.refresh_from_db()
    return action


def retries_of(executions) -> int:
    return Execution.objects.filter(retry_of__in=executions).count()


def attempt_fail_now(execution: Execution) -> None:
    """Its one attempt fails for good (an agent that always fails)."""
    now = timezone.now()
    claimed, _ = execution_claim(
        execution_id=execution.pk, expected_attempt=0, worker="test-worker@conveyor", at=now
    )
    error = failure("internal", retryable=False)
    assert attempt_fail(execution=claimed, number=1, error=error, at=now) is None


def test_a_bulk_retry_of_200_failed_executions_creates_200_retries_once(
    alice, failing, make_execution, two_hundred_failed
):
    make_execution(failing, "succeeded")  # not failed: left alone
    wanted = {"status": ["failed"], "agent": str(failing.uuid)}

    preview = bulk_preview(owner=alice, action="retry", filter=wanted)
    assert (preview.matching, preview.count) == (200, 200)
    assert preview.headline == "This will retry 200 executions."

    action = run_to_the_end(
        bulk_action_create(owner=alice, action="retry", filter=wanted, via="api", previewed=200)
    )
    assert action.status == "done"
    assert (action.total, action.done, action.skipped, action.failed) == (200, 200, 0, 0)
    assert retries_of(two_hundred_failed) == 200
    assert all(e.retried_as.count() == 1 for e in two_hundred_failed[:5])
    retry = Execution.objects.get(retry_of=two_hundred_failed[0])
    assert retry.trigger == "retry" and retry.status == "queued"
    assert "by alice (bulk retry)" in retry.events.get().reason
    # It keeps what it made: the 200 retries, which its filter bulk=<id> selects.
    made = Execution.objects.filter(retry_of__in=two_hundred_failed)
    assert sorted(action.execution_ids) == sorted(made.values_list("pk", flat=True))
    by_action = filter_executions(Execution.objects.all(), data={"bulk": str(action.uuid)})
    assert set(by_action) == set(made)

    # The same action again: nothing left to retry, and no action recorded.
    again = bulk_preview(owner=alice, action="retry", filter=wanted)
    assert (again.matching, again.count, again.already_retried) == (200, 0, 200)
    assert again.headline == (
        "Nothing to retry: the 200 executions this filter selects are already retried."
    )
    with pytest.raises(BulkRefused, match="Nothing to retry: the 200 executions") as refused:
        bulk_action_create(owner=alice, action="retry", filter=wanted, via="api")
    assert refused.value.code == "nothing_to_do"
    assert BulkAction.objects.count() == 1
    assert retries_of(two_hundred_failed) == 200

    # The first action's task sent once more (a redelivered message) does nothing either.
    assert bulk_action_run(bulk_id=action.pk, max_seconds=EVERYTHING) is True
    action.refresh_from_db()
    assert action.done == 200 and retries_of(two_hundred_failed) == 200


def test_the_batches_go_on_where_the_last_committed_one_ended(alice, failing, make_execution):
    failed = [make_execution(failing, "failed") for _ in range(25)]
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="page")
    assert action.status == "pending" and action.total == 25

    # A task that runs out of time after one batch (then sends itself again).
    assert bulk_action_run(bulk_id=action.pk, max_seconds=0, batch=10) is False
    action.refresh_from_db()
    assert action.status == "running" and action.started_at is not None
    assert action.done == 10 and action.last_id == failed[9].pk
    assert action.percent == 40
    assert retries_of(failed) == 10

    action = run_to_the_end(action, batch=10)
    assert (action.done, action.skipped, action.status) == (25, 0, "done")
    assert action.finished_at is not None and action.percent == 100
    assert retries_of(failed) == 25


def test_a_retry_already_made_by_hand_is_skipped_with_its_reason(alice, failing, make_execution):
    from executions.services import execution_retry

    failed = [make_execution(failing, "failed") for _ in range(3)]
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="page")
    # Retried by hand between the preview and the action's turn.
    execution_retry(execution=failed[1], by="alice")
    action = run_to_the_end(action)
    assert (action.total, action.done, action.skipped) == (3, 2, 1)
    assert action.reasons == {"changed": 1}
    assert bulk.reason_words(action.reasons) == ["1 no longer matched when their turn came"]
    assert retries_of(failed) == 3


def test_executions_that_fail_after_the_action_was_created_are_not_swept_in(
    alice, failing, make_execution
):
    before = [make_execution(failing, "failed") for _ in range(3)]
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="page")
    later = make_execution(failing, "failed")
    action = run_to_the_end(action)
    assert action.done == 3
    assert retries_of(before) == 3
    assert retries_of([later]) == 0


def test_a_paused_agent_refuses_its_retries_and_they_are_counted_as_skipped(
    alice, failing, make_agent, make_execution
):
    from agents.services import agent_pause

    other = make_agent(name="report")
    make_execution(failing, "failed")
    make_execution(other, "failed")
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="page")
    agent_pause(agent=failing)
    action = run_to_the_end(action)
    assert (action.done, action.skipped, action.failed) == (1, 1, 0)
    assert action.reasons == {"agent_paused": 1}
    assert bulk.reason_words(action.reasons) == ["1 their agent is paused"]


def test_a_bulk_cancel_by_filter_cancels_the_active_ones_once(
    alice, failing, make_agent, make_execution
):
    other = make_agent(name="report")
    queued = [make_execution(failing, "queued", not_before=timezone.now() + timedelta(hours=1))]
    queued += [make_execution(failing, "queued", hold=True) for _ in range(2)]
    running = make_execution(failing, "running")
    retrying = make_execution(failing, "retrying", attempt=1)
    finished = make_execution(failing, "succeeded")
    elsewhere = make_execution(other, "queued", hold=True)
    wanted = {"agent": str(failing.uuid)}

    preview = bulk_preview(owner=alice, action="cancel", filter=wanted)
    assert (preview.matching, preview.count, preview.other_status) == (6, 5, 1)
    assert preview.headline == "This will cancel 5 executions."
    assert preview.left_out == ["1 is already finished"]

    action = run_to_the_end(
        bulk_action_create(owner=alice, action="cancel", filter=wanted, via="page")
    )
    assert (action.total, action.done, action.skipped) == (5, 5, 0)
    for execution in [*queued, running, retrying]:
        execution.refresh_from_db()
        assert execution.status == "cancelled", execution
        assert execution.error_message == "This execution was cancelled by alice (bulk cancel)."
    finished.refresh_from_db()
    elsewhere.refresh_from_db()
    assert (finished.status, elsewhere.status) == ("succeeded", "queued")

    # What it cancelled, exactly: the list's filter bulk=<id>.
    by_action = filter_executions(Execution.objects.all(), data={"bulk": str(action.uuid)})
    assert set(by_action) == {*queued, running, retrying}

    with pytest.raises(BulkRefused, match="Nothing to cancel: the 6 executions this filter"):
        bulk_action_create(owner=alice, action="cancel", filter=wanted, via="page")
    assert Execution.objects.filter(agent=failing, status="cancelled").count() == 5
    assert BulkAction.objects.count() == 1


def test_a_second_retry_retries_the_retries_that_failed_in_turn(alice, failing, make_execution):
    """An agent that always fails: each confirm retries the retries the last one made."""
    first_failed = [make_execution(failing, "failed") for _ in range(2)]
    first = run_to_the_end(
        bulk_action_create(owner=alice, action="retry", filter={"status": ["failed"]}, via="api")
    )
    retries = list(Execution.objects.filter(pk__in=first.execution_ids))
    for retry in retries:  # they fail in turn
        attempt_fail_now(retry)
    preview = bulk_preview(owner=alice, action="retry", filter={"status": ["failed"]})
    assert (preview.count, preview.already_retried) == (2, 2)
    second = run_to_the_end(
        bulk_action_create(owner=alice, action="retry", filter={"status": ["failed"]}, via="api")
    )
    assert second.done == 2
    assert {e.retry_of_id for e in Execution.objects.filter(pk__in=second.execution_ids)} == {
        r.pk for r in retries
    }
    assert retries_of(first_failed) == 2


def test_a_cancel_by_status_and_trigger_selects_what_the_list_selects(
    alice, failing, make_execution
):
    by_api = make_execution(failing, "queued", hold=True, trigger="api")
    by_hand = make_execution(failing, "queued", hold=True, trigger="manual")
    action = run_to_the_end(
        bulk_action_create(
            owner=alice,
            action="cancel",
            filter={"status": "queued", "trigger": ["api"]},
            via="api",
        )
    )
    assert action.filter == {"status": ["queued"], "trigger": ["api"]}
    assert action.done == 1
    by_api.refresh_from_db()
    by_hand.refresh_from_db()
    assert (by_api.status, by_hand.status) == ("cancelled", "queued")


def test_the_filter_selects_by_category_and_time(alice, failing, make_execution):
    old_auth = make_execution(failing, "failed", error_category="auth", ago=timedelta(days=3))
    new_auth = make_execution(failing, "failed", error_category="auth", ago=timedelta(hours=1))
    new_timeout = make_execution(
        failing, "failed", error_category="timeout", ago=timedelta(hours=1)
    )
    since = (timezone.now() - timedelta(days=1)).isoformat()
    wanted = {"error_category": ["auth"], "created_after": since}
    assert bulk_preview(owner=alice, action="retry", filter=wanted).count == 1
    run_to_the_end(bulk_action_create(owner=alice, action="retry", filter=wanted, via="api"))
    assert retries_of([new_auth]) == 1
    assert retries_of([old_auth, new_timeout]) == 0


def test_bob_cannot_act_on_alices_executions(alice, bob, failing, make_execution):
    theirs = [make_execution(failing, "failed") for _ in range(3)]
    queued = make_execution(failing, "queued", hold=True)
    for action_name in ("retry", "cancel"):
        assert bulk_preview(owner=bob, action=action_name, filter={}).matching == 0
        with pytest.raises(BulkRefused, match="this filter selects no executions"):
            bulk_action_create(owner=bob, action=action_name, filter={}, via="api")
        # Alice's agent, or her bulk action, named in bob's filter: not his, said so.
        with pytest.raises(InvalidFilter, match="agent: No agent of yours has this id"):
            bulk_preview(owner=bob, action=action_name, filter={"agent": str(failing.uuid)})
    hers = bulk_action_create(owner=alice, action="cancel", filter={}, via="api")
    with pytest.raises(InvalidFilter, match="bulk: No bulk action of yours has this id"):
        bulk_preview(owner=bob, action="retry", filter={"bulk": str(hers.uuid)})
    assert not BulkAction.objects.filter(owner=bob).exists()
    assert retries_of(theirs) == 0
    queued.refresh_from_db()
    assert queued.status == "queued"  # alice's action, not yet run


def test_staff_act_only_on_their_own_executions_too(staff, failing, make_execution):
    make_execution(failing, "failed")
    assert bulk_preview(owner=staff, action="retry", filter={}).matching == 0


def test_a_retry_leaves_out_what_cannot_be_retried_and_says_why(alice, failing, make_execution):
    make_execution(failing, "failed")
    retried = make_execution(failing, "failed")
    execution_retry(execution=retried, by="alice")  # its retry is queued: another status
    make_execution(failing, "succeeded")
    preview = bulk_preview(owner=alice, action="retry", filter={})
    assert (preview.matching, preview.count) == (4, 1)
    assert preview.left_out == ["1 is already retried", "2 are neither failed nor cancelled"]
    assert preview.headline == "This will retry 1 execution."


def test_nothing_to_do_is_said_plainly(alice, failing, make_execution):
    preview = bulk_preview(owner=alice, action="cancel", filter={})
    assert preview.headline == "Nothing to cancel: this filter selects no executions."
    make_execution(failing, "succeeded")
    preview = bulk_preview(owner=alice, action="cancel", filter={})
    assert preview.headline == (
        "Nothing to cancel: the execution this filter selects is already finished."
    )
    retried = make_execution(failing, "failed")
    execution_retry(execution=retried, by="alice")
    preview = bulk_preview(owner=alice, action="retry", filter={})
    assert preview.headline == (
        "Nothing to retry: of the 3 executions this filter selects, 1 is already retried and "
        "2 are neither failed nor cancelled."
    )


@pytest.mark.parametrize(
    ("wanted", "field", "words"),
    [
        ({"stauts": ["failed"]}, "filter.stauts", "Unknown filter"),
        ({"status": ["broken"]}, "filter.status", "“broken” is not one of the choices: queued,"),
        ({"agent": "not-an-id"}, "filter.agent", "valid UUID"),
        ({"created_after": "last tuesday"}, "filter.created_after", "valid date"),
        ({"agent": ["a", "b"]}, "filter.agent", "agent: Give one value, not several."),
        ({"bulk": "nope"}, "filter.bulk", "bulk: Enter a valid UUID."),
        ({"status": [{"a": 1}]}, "filter.status", "string or a number"),
        ({"slower_than": -1}, "filter.slower_than", "greater than or equal to 0"),
    ],
)
def test_a_filter_that_does_not_parse_is_refused_naming_it(alice, wanted, field, words):
    with pytest.raises(InvalidFilter) as refused:
        bulk_action_create(owner=alice, action="retry", filter=wanted, via="api")
    assert field in refused.value.details
    assert words in refused.value.message
    assert not BulkAction.objects.exists()


def test_an_unknown_action_is_refused(alice):
    with pytest.raises(BulkRefused, match="Unknown action “delete”: give retry or cancel"):
        bulk_preview(owner=alice, action="delete", filter={})
    with pytest.raises(BulkRefused, match="Choose an action: retry or cancel"):
        bulk_preview(owner=alice, action="", filter={})


def test_every_message_names_its_filter_as_its_details_say(alice):
    """The message is the first detail, prefixed with its name: the same words, same case."""
    for wanted in ({"agent": ["a", "b"]}, {"stauts": "x"}, {"slower_than": -1}):
        with pytest.raises(InvalidFilter) as refused:
            bulk_preview(owner=alice, action="retry", filter=wanted)
        (name, messages), *_ = refused.value.details.items()
        assert refused.value.message == f"{name.removeprefix('filter.')}: {' '.join(messages)}"


def test_more_executions_than_one_action_covers_are_refused(
    alice, failing, make_execution, monkeypatch
):
    monkeypatch.setattr(bulk, "BULK_MAX", 2)
    for _ in range(3):
        make_execution(failing, "failed")
    with pytest.raises(BulkRefused, match="3 executions match; one bulk action covers at most 2"):
        bulk_action_create(owner=alice, action="retry", filter={}, via="api")


def test_the_action_is_sent_to_a_worker_only_on_commit(
    alice, failing, make_execution, django_capture_on_commit_callbacks
):
    make_execution(failing, "failed")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        bulk_action_create(owner=alice, action="retry", filter={}, via="api")
    assert [c.__name__ for c in callbacks] == ["send_bulk_action"]


def test_the_dispatcher_sends_again_an_action_whose_message_was_lost(
    alice, failing, make_execution, django_capture_on_commit_callbacks
):
    make_execution(failing, "failed")
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="api")
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert bulk.bulk_actions_resume(at=now) == 0  # stamped just now: its task is on its way
        assert bulk.bulk_actions_resume(at=now + bulk.STALE_AFTER * 2) == 1
        # Stamped when it was sent again: the next tick leaves it to that copy.
        assert bulk.bulk_actions_resume(at=now + bulk.STALE_AFTER * 2) == 0
    assert len(callbacks) == 1
    run_to_the_end(action)
    assert bulk.bulk_actions_resume(at=now + bulk.STALE_AFTER * 10) == 0


def test_an_action_stopped_by_an_error_says_so_and_does_nothing_more(
    alice, failing, make_execution
):
    failed = make_execution(failing, "failed")
    action = bulk_action_create(owner=alice, action="retry", filter={}, via="api")
    assert bulk.bulk_action_fail(bulk_id=action.pk, error="Stopped by an unexpected error.")
    assert bulk_action_run(bulk_id=action.pk, max_seconds=EVERYTHING) is True
    action.refresh_from_db()
    assert (action.status, action.done, action.error) == (
        "failed",
        0,
        "Stopped by an unexpected error.",
    )
    assert retries_of([failed]) == 0
