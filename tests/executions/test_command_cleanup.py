"""manage.py cleanup: retention by hand (executions.retention), with --dry-run, --batch and
--max-seconds, printing each batch and what went by kind of row and by agent."""

import logging
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from executions.models import Execution, ExecutionEvent

pytestmark = pytest.mark.django_db


def cleanup(*args) -> str:
    out = StringIO()
    call_command("cleanup", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def old_runs(make_agent, make_execution, bob):
    """Three old runs of alice's "reports" and one of bob's "sync", and a young one."""
    long_ago = timezone.now() - timedelta(days=45)
    reports = make_agent(name="reports")
    sync = make_agent(owner=bob, name="sync")
    old = [make_execution(reports, "succeeded", at=long_ago - timedelta(hours=i)) for i in range(3)]
    old.append(make_execution(sync, "failed", at=long_ago - timedelta(days=60)))
    young = make_execution(reports, "succeeded", ago=timedelta(days=2))
    return old, young


def test_a_dry_run_prints_what_would_go_by_kind_and_by_agent_and_deletes_nothing(old_runs):
    events = ExecutionEvent.objects.count()

    out = cleanup("--dry-run")

    assert Execution.objects.count() == 5 and ExecutionEvent.objects.count() == events
    assert "Dry run: nothing is deleted." in out
    assert "\n  succeeded: after 30 days\n  failed and cancelled: after 90 days\n" in out
    assert "Would delete, in 2 batches" in out  # succeeded ones, then the failed one
    lines = [line.split() for line in out.splitlines()]
    assert ["executions", "4"] in lines
    assert ["attempts", "4"] in lines
    assert ["alice/reports", "3"] in lines and ["bob/sync", "1"] in lines


def test_it_deletes_in_batches_of_the_given_size_printing_each(old_runs):
    _, young = old_runs

    out = cleanup("--batch", "2")

    assert list(Execution.objects.all()) == [young]
    assert "batch 1: deleted 2 executions" in out
    assert "batch 2: deleted 1 executions" in out
    assert "batch 3: deleted 1 executions" in out
    assert "Deleted, in 3 batches" in out
    assert "Stopped by --max-seconds" not in out


def test_a_time_budget_stops_it_between_batches_and_says_to_run_it_again(old_runs):
    out = cleanup("--batch", "1", "--max-seconds", "0")

    assert Execution.objects.count() == 4
    assert "batch 1: deleted 1 executions" in out
    assert "Stopped by --max-seconds before the end; run it again to go on." in out

    cleanup()

    assert Execution.objects.count() == 1


def test_nothing_old_enough_says_so(make_agent, make_execution):
    make_execution(make_agent(), "succeeded", ago=timedelta(days=1))

    out = cleanup()

    assert "Nothing to delete" in out
    assert Execution.objects.count() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "0"], "Give a number of at least 1, not 0."),
        (["--batch", "many"], "Give a whole number, not “many”."),
        (["--max-seconds", "-1"], "Give a number of seconds of 0 or more, not -1."),
    ],
)
def test_bad_options_are_refused_with_what_to_give(args, message):
    with pytest.raises(CommandError, match=message):
        cleanup(*args)


def test_an_agent_s_own_days_are_listed_in_words_and_each_batch_said_once(
    make_agent, make_execution, caplog
):
    agent = make_agent(name="hourly", retain_succeeded_days=1)
    make_execution(agent, "succeeded", ago=timedelta(days=3))

    with caplog.at_level(logging.INFO):
        out = cleanup("--dry-run")

    assert "\n  succeeded: after 1 day for 1 agent\n" in out
    assert "batch 1: would delete 1 executions" in out
    # Not again as the retention log's line (a terminal shows both).
    assert not [r for r in caplog.records if "retention batch" in r.getMessage()]
