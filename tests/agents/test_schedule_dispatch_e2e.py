"""Schedules through real ``celery beat`` processes (one dispatcher tick a second), the session's
worker, Redis and the database: one execution per slot, whatever beat does."""

import itertools
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import SkippedSlot
from agents.schedule_services import schedule_create, schedule_pause, schedule_resume
from executions.models import Execution
from executions.services import execution_request
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

EVERY = 2


def scheduled_runs(schedule):
    return list(Execution.objects.filter(schedule=schedule).order_by("scheduled_for"))


def wait_for_runs(schedule, count, *, timeout=40):
    deadline = time.monotonic() + timeout
    while len(runs := scheduled_runs(schedule)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(runs)} scheduled runs after {timeout} s, wanted {count}")
        time.sleep(0.2)
    return runs


def assert_one_run_per_consecutive_slot(runs, *, first=None):
    slots = [run.scheduled_for for run in runs]
    assert len(set(slots)) == len(slots), f"a slot ran twice: {slots}"
    gaps = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(slots)}
    assert gaps == {EVERY}, f"slots are not consecutive: {slots}"
    if first is not None:
        assert slots[0] == first
    assert all(run.trigger == "schedule" for run in runs)


def test_an_interval_schedule_starts_one_execution_per_slot(beat, make_agent):
    agent = make_agent(overlap_policy="allow")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=EVERY)
    beat()

    runs = wait_for_runs(schedule, 5)

    assert_one_run_per_consecutive_slot(runs, first=schedule.next_run_at)
    for run in runs[:3]:
        assert wait_for(run, "succeeded", "failed").status == "succeeded"
    assert not SkippedSlot.objects.filter(schedule=schedule).exists()


def test_two_beats_at_once_still_start_one_execution_per_slot(beat, make_agent):
    agent = make_agent(overlap_policy="allow")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=EVERY)
    beats = beat.several(2)
    # Both send a tick every second from now on.
    for process in beats:
        process.wait_until_sending(times=3)
    already = len(scheduled_runs(schedule))

    runs = wait_for_runs(schedule, already + 4)

    assert_one_run_per_consecutive_slot(runs, first=schedule.next_run_at)
    assert all(process.proc.poll() is None for process in beats)


def test_a_beat_restart_neither_loses_nor_repeats_a_slot(beat, make_agent):
    agent = make_agent(overlap_policy="allow")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=EVERY)
    first = beat()
    wait_for_runs(schedule, 2)
    first.stop()
    time.sleep(5)  # down for two or three slots (well within the misfire grace)
    beat()

    runs = wait_for_runs(schedule, 7)

    assert_one_run_per_consecutive_slot(runs, first=schedule.next_run_at)


def test_pausing_stops_the_runs_and_resuming_continues_without_a_burst(beat, make_agent):
    agent = make_agent(overlap_policy="allow")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=EVERY)
    beat()
    wait_for_runs(schedule, 2)

    schedule_pause(schedule=schedule)
    time.sleep(1.5)  # a tick that was already under way may still finish its slot
    paused_count = len(scheduled_runs(schedule))
    time.sleep(3 * EVERY)
    assert len(scheduled_runs(schedule)) == paused_count

    resumed_at = timezone.now()
    schedule_resume(schedule=schedule, at=resumed_at)
    runs = wait_for_runs(schedule, paused_count + 3)

    after = runs[paused_count:]
    assert_one_run_per_consecutive_slot(after)
    # No catch-up for the paused slots: the first new slot is the first one after resuming.
    assert resumed_at < after[0].scheduled_for <= resumed_at + timedelta(seconds=EVERY)
    assert not SkippedSlot.objects.filter(schedule=schedule).exists()


def test_a_delayed_run_starts_after_its_time_and_soon_after_it(beat, make_agent):
    beat()
    not_before = timezone.now() + timedelta(seconds=3)
    execution = execution_request(agent=make_agent(), trigger="manual", not_before=not_before)

    time.sleep(max(0.0, (not_before - timezone.now()).total_seconds() - 0.5))
    execution.refresh_from_db()
    assert (execution.status, execution.attempt) == ("queued", 0)

    wait_for(execution, "succeeded", "failed")
    started = execution.attempts.get().started_at
    assert started >= not_before
    # A correctness bound, not a speed claim: a tick a second, then a free worker.
    assert started - not_before < timedelta(seconds=5)
