"""Bulk actions through the real worker: the action is sent on commit, the maintenance worker
goes through its batches, and a second action with the same filter is refused: nothing to do."""

import time

import pytest

from executions.bulk import BATCH, BulkRefused, bulk_action_create
from executions.models import BulkAction, Execution
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


def wait_until_over(action: BulkAction, timeout: float = 60) -> BulkAction:
    deadline = time.monotonic() + timeout
    while True:
        action.refresh_from_db()
        if action.is_final:
            return action
        if time.monotonic() > deadline:
            raise AssertionError(f"bulk action still {action.status} after {timeout} s: {action}")
        time.sleep(0.1)


def test_a_bulk_retry_and_a_bulk_cancel_run_in_the_worker(
    worker, alice, make_agent, make_execution
):
    agent = make_agent(name="nightly-sync")
    failed = [make_execution(agent, "failed") for _ in range(BATCH + 20)]  # two batches
    wanted = {"status": ["failed"], "agent": str(agent.uuid)}

    action = wait_until_over(
        bulk_action_create(owner=alice, action="retry", filter=wanted, via="api")
    )
    assert action.status == "done", action.error
    assert (action.total, action.done, action.skipped, action.failed) == (120, 120, 0, 0)
    assert action.started_at is not None and action.finished_at is not None
    retries = Execution.objects.filter(retry_of__in=failed)
    assert retries.count() == 120
    # The retries are real runs: the worker runs them too.
    assert wait_for(retries.first(), "succeeded").status == "succeeded"

    with pytest.raises(BulkRefused, match="Nothing to retry: the 120 executions this filter"):
        bulk_action_create(owner=alice, action="retry", filter=wanted, via="api")
    assert Execution.objects.filter(retry_of__in=failed).count() == 120
    assert sorted(action.execution_ids) == sorted(retries.values_list("pk", flat=True))

    held = [make_execution(agent, "queued", hold=True) for _ in range(5)]
    cancel = wait_until_over(
        bulk_action_create(
            owner=alice,
            action="cancel",
            filter={"status": ["queued"], "trigger": ["manual"]},
            via="api",
        )
    )
    assert (cancel.status, cancel.done) == ("done", 5)
    assert {e.status for e in Execution.objects.filter(pk__in=[h.pk for h in held])} == {
        "cancelled"
    }
