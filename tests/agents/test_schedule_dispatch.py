"""The schedules' slot dispatch, called directly with pinned time: one execution per slot,
the overlap policies, and what happens to slots missed while Conveyor was down."""

from datetime import timedelta

import pytest
from django.test import override_settings

from agents.models import Schedule, SkippedSlot
from agents.schedule_dispatch import SlotReport, dispatch_schedules
from agents.schedule_services import schedule_pause, schedule_resume
from agents.services import agent_pause
from executions.models import Execution
from executions.recovery import publish_due
from executions.services import attempt_succeed, execution_claim, execution_request
from tests.conftest import utc

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("grace_of_60_seconds")]

T0 = utc(2026, 6, 1, 12, 0, 0)


@pytest.fixture
def grace_of_60_seconds():
    with override_settings(CONVEYOR_SCHEDULE_MISFIRE_GRACE=60):
        yield


def dispatch(at, captured=None):
    return dispatch_schedules(at=at)


def runs_of(schedule):
    return list(
        Execution.objects.filter(schedule=schedule)
        .order_by("scheduled_for")
        .values_list("scheduled_for", flat=True)
    )


def skips_of(schedule):
    return list(
        SkippedSlot.objects.filter(schedule=schedule)
        .order_by("slot_at")
        .values_list("slot_at", "reason")
    )


def start_running(execution, at):
    """A worker claims the execution's first attempt: (execution, attempt)."""
    claimed = execution_claim(execution_id=execution.pk, expected_attempt=0, worker="w", at=at)
    assert claimed is not None
    return claimed


# --- One execution per slot --------------------------------------------------------------------


def test_a_due_slot_starts_one_execution_for_that_slot_and_advances(
    make_agent, make_schedule, django_capture_on_commit_callbacks
):
    agent = make_agent()
    schedule = make_schedule(agent, interval_seconds=60, input={"n": 1}, at=T0)
    slot = T0 + timedelta(seconds=60)

    assert dispatch(slot - timedelta(seconds=1)).started == 0
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report = dispatch(slot + timedelta(seconds=1))

    assert report.started == 1 and len(callbacks) == 1
    execution = Execution.objects.get()
    assert (execution.trigger, execution.schedule, execution.scheduled_for) == (
        "schedule",
        schedule,
        slot,
    )
    assert execution.input == {"n": 1} and execution.not_before is None
    schedule.refresh_from_db()
    assert schedule.last_slot_at == slot
    assert schedule.next_run_at == slot + timedelta(seconds=60)


def test_the_same_slot_dispatched_twice_starts_one_execution(make_agent, make_schedule):
    schedule = make_schedule(make_agent(), interval_seconds=60, at=T0)
    slot = schedule.next_run_at
    dispatch(slot)
    dispatch(slot)  # a second tick at the same time: nothing due any more
    # A tick that read the schedule before the first one advanced it (two beats, a duplicate
    # message): the slot's execution exists, the unique constraint turns it into a no-op.
    Schedule.objects.filter(pk=schedule.pk).update(next_run_at=slot, last_slot_at=None)
    report = dispatch(slot)

    assert report.started == 0 and not report.errors
    assert runs_of(schedule) == [slot]
    assert skips_of(schedule) == []
    schedule.refresh_from_db()
    assert schedule.next_run_at == slot + timedelta(seconds=60)


def test_slots_a_little_late_each_run_once_in_order(make_agent, make_schedule):
    schedule = make_schedule(make_agent(overlap_policy="allow"), interval_seconds=10, at=T0)
    # The dispatcher was 35 s late (less than the 60 s grace): every slot still runs.
    dispatch(T0 + timedelta(seconds=45))
    assert runs_of(schedule) == [T0 + timedelta(seconds=s) for s in (10, 20, 30, 40)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(seconds=50)


def test_a_one_off_schedule_runs_once_and_is_done(make_agent, make_schedule):
    run_at = T0 + timedelta(minutes=5)
    schedule = make_schedule(make_agent(), kind="once", run_at=run_at, at=T0)
    dispatch(run_at + timedelta(seconds=1))
    dispatch(run_at + timedelta(hours=1))
    assert runs_of(schedule) == [run_at]
    schedule.refresh_from_db()
    assert schedule.next_run_at is None and schedule.last_slot_at == run_at


def test_a_cron_slot_in_a_dst_gap_runs_once_at_the_jump(make_agent, make_schedule):
    # 02:30 does not exist in Paris on 29 March 2026; the run happens at 03:00 (01:00 UTC).
    before = utc(2026, 3, 28, 12)
    schedule = make_schedule(
        make_agent(), kind="cron", cron="*/30 2 * * *", timezone="Europe/Paris", at=before
    )
    assert schedule.next_run_at == utc(2026, 3, 29, 1, 0)
    for minutes in range(0, 120, 2):  # a tick every 2 minutes through the night
        dispatch(utc(2026, 3, 29, 0, 0) + timedelta(minutes=minutes))
    assert runs_of(schedule) == [utc(2026, 3, 29, 1, 0)]


def test_a_cron_slot_in_a_dst_overlap_runs_once_the_first_time(make_agent, make_schedule):
    before = utc(2026, 10, 24, 12)
    schedule = make_schedule(
        make_agent(), kind="cron", cron="30 2 * * *", timezone="Europe/Paris", at=before
    )
    for minutes in range(0, 180, 2):
        dispatch(utc(2026, 10, 24, 23, 30) + timedelta(minutes=minutes))
    # 02:30 summer time (00:30 UTC), not again at 02:30 winter time (01:30 UTC).
    assert runs_of(schedule) == [utc(2026, 10, 25, 0, 30)]


def test_a_schedule_that_cannot_be_read_does_not_hold_up_the_others(make_agent, make_schedule):
    agent = make_agent()
    broken = make_schedule(agent, kind="cron", cron="0 * * * *", at=T0)
    fine = make_schedule(agent, kind="cron", cron="0 * * * *", at=T0)
    Schedule.objects.filter(pk=broken.pk).update(timezone="Nowhere/Atlantis")
    report = dispatch(T0 + timedelta(hours=1))
    assert report.errors == 1
    assert runs_of(fine) == [T0 + timedelta(hours=1)]
    assert runs_of(broken) == []


# --- Overlap policies ------------------------------------------------------------------------


def test_skip_records_the_slot_while_the_previous_run_is_still_running(make_agent, make_schedule):
    agent = make_agent()  # overlap_policy "skip" is the default
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    first_slot = T0 + timedelta(seconds=60)
    dispatch(first_slot)
    start_running(Execution.objects.get(), first_slot)

    dispatch(first_slot + timedelta(seconds=60))

    assert runs_of(schedule) == [first_slot]
    assert skips_of(schedule) == [
        (first_slot + timedelta(seconds=60), "the previous run was still running")
    ]


def test_skip_also_counts_runs_not_started_by_the_schedule(make_agent, make_schedule):
    agent = make_agent()
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    execution_request(agent=agent, trigger="manual", at=T0)  # queued, waiting for a worker
    dispatch(T0 + timedelta(seconds=60))
    assert runs_of(schedule) == []
    assert skips_of(schedule)[0][1] == "the previous run was still waiting"


def test_a_delayed_run_whose_time_has_not_come_does_not_count_as_active(make_agent, make_schedule):
    agent = make_agent()
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    execution_request(agent=agent, trigger="manual", not_before=T0 + timedelta(hours=1), at=T0)
    dispatch(T0 + timedelta(seconds=60))
    assert runs_of(schedule) == [T0 + timedelta(seconds=60)]


def test_two_schedules_of_one_agent_due_together_start_one_run(make_agent, make_schedule):
    agent = make_agent()
    first = make_schedule(agent, interval_seconds=60, at=T0)
    second = make_schedule(agent, interval_seconds=60, at=T0)
    dispatch(T0 + timedelta(seconds=60))
    assert runs_of(first) == [T0 + timedelta(seconds=60)]
    assert skips_of(second) == [(T0 + timedelta(seconds=60), "the previous run was still waiting")]


def test_the_skip_reason_names_the_busiest_active_run(make_agent, make_schedule):
    agent = make_agent()
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    execution_request(agent=agent, trigger="manual", at=T0)
    start_running(execution_request(agent=agent, trigger="manual", at=T0), T0)
    dispatch(T0 + timedelta(seconds=60))
    assert skips_of(schedule)[0][1] == "the previous run was still running"


def test_allow_starts_the_slot_alongside_the_active_run(make_agent, make_schedule):
    agent = make_agent(overlap_policy="allow")
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    dispatch(T0 + timedelta(seconds=60))
    start_running(Execution.objects.get(), T0 + timedelta(seconds=60))
    dispatch(T0 + timedelta(seconds=120))
    assert runs_of(schedule) == [T0 + timedelta(seconds=60), T0 + timedelta(seconds=120)]
    assert skips_of(schedule) == []


def test_queue_holds_the_slot_until_the_active_run_ends_then_hands_it_over(
    make_agent, make_schedule, django_capture_on_commit_callbacks
):
    agent = make_agent(overlap_policy="queue")
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    first, second, third = (T0 + timedelta(seconds=60 * n) for n in (1, 2, 3))
    dispatch(first)
    active, attempt = start_running(Execution.objects.get(), first)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dispatch(second)
    held = Execution.objects.get(scheduled_for=second)
    assert held.status == "queued" and callbacks == []  # written, not sent to the broker
    assert (held.wait_reason, held.wait_until) == ("held", None)
    assert publish_due(at=second + timedelta(seconds=5)) == 0

    # While one run waits, a further slot is skipped rather than piling up.
    dispatch(third)
    assert skips_of(schedule) == [
        (third, "a run of this schedule was already waiting for the active run to finish")
    ]

    assert attempt_succeed(execution=active, attempt=attempt, result=None, at=third)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert publish_due(at=third + timedelta(seconds=1)) == 1
    assert len(callbacks) == 1
    held.refresh_from_db()
    assert (held.wait_reason, held.published_at) == ("broker", third + timedelta(seconds=1))
    assert publish_due(at=third + timedelta(seconds=2)) == 0


def test_queue_starts_at_once_when_nothing_is_active(
    make_agent, make_schedule, django_capture_on_commit_callbacks
):
    agent = make_agent(overlap_policy="queue")
    make_schedule(agent, interval_seconds=60, at=T0)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dispatch(T0 + timedelta(seconds=60))
    assert len(callbacks) == 1
    assert Execution.objects.get().not_before is None


def test_a_paused_agent_records_its_slots_as_skipped(make_agent, make_schedule):
    agent = make_agent()
    schedule = make_schedule(agent, interval_seconds=60, at=T0)
    agent_pause(agent=agent)
    dispatch(T0 + timedelta(seconds=60))
    assert runs_of(schedule) == []
    assert skips_of(schedule) == [(T0 + timedelta(seconds=60), "the agent was paused")]


# --- Downtime and catch-up ---------------------------------------------------------------------


def test_after_downtime_catch_up_latest_runs_once_for_the_latest_missed_slot(
    make_agent, make_schedule
):
    schedule = make_schedule(make_agent(), interval_seconds=600, catch_up="latest", at=T0)
    # Down from before 12:10 until 13:01:30: the 13:00 slot is 90 s late, beyond the 60 s grace.
    back = T0 + timedelta(hours=1, seconds=90)
    report = dispatch(back)

    latest = T0 + timedelta(hours=1)
    assert report.started == 1
    assert runs_of(schedule) == [latest]
    # The five slots before it are recorded as one, at the latest of them.
    assert skips_of(schedule) == [
        (latest - timedelta(minutes=10), "missed while Conveyor was down (and the slots before it)")
    ]
    schedule.refresh_from_db()
    assert schedule.next_run_at == latest + timedelta(minutes=10)
    assert schedule.last_slot_at == latest
    dispatch(back + timedelta(seconds=1))
    assert len(runs_of(schedule)) == 1


def test_after_downtime_catch_up_none_records_one_skipped_slot_and_runs_nothing(
    make_agent, make_schedule
):
    schedule = make_schedule(make_agent(), interval_seconds=600, catch_up="none", at=T0)
    back = T0 + timedelta(hours=1, seconds=90)
    report = dispatch(back)

    assert report.started == 0
    assert runs_of(schedule) == []
    assert skips_of(schedule) == [
        (T0 + timedelta(hours=1), "missed while Conveyor was down (and the slots before it)")
    ]
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(hours=1, minutes=10)


def test_a_single_missed_slot_is_not_said_to_have_earlier_ones(make_agent, make_schedule):
    schedule = make_schedule(make_agent(), kind="cron", cron="0 * * * *", catch_up="none", at=T0)
    dispatch(T0 + timedelta(hours=1, minutes=5))
    assert skips_of(schedule) == [(T0 + timedelta(hours=1), "missed while Conveyor was down")]


def test_a_cron_schedule_down_for_a_day_catches_up_once(make_agent, make_schedule):
    schedule = make_schedule(make_agent(), kind="cron", cron="*/5 * * * *", at=T0)
    back = T0 + timedelta(days=1, minutes=3)
    dispatch(back)
    # The latest slot (12:00 next day) was 3 minutes ago: it runs, once.
    assert runs_of(schedule) == [T0 + timedelta(days=1)]
    assert len(skips_of(schedule)) == 1
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + timedelta(days=1, minutes=5)


def test_when_a_later_slot_is_on_time_the_missed_ones_are_recorded_and_it_runs(
    make_agent, make_schedule
):
    schedule = make_schedule(
        make_agent(overlap_policy="allow"), interval_seconds=30, catch_up="none", at=T0
    )
    back = T0 + timedelta(minutes=10, seconds=10)  # slots up to 12:09:00 are over 60 s late
    dispatch(back)
    assert runs_of(schedule) == [
        T0 + timedelta(minutes=9, seconds=30),
        T0 + timedelta(minutes=10),
    ]
    assert skips_of(schedule) == [
        (T0 + timedelta(minutes=9), "missed while Conveyor was down (and the slots before it)")
    ]


def test_pausing_stops_the_slots_and_resuming_does_not_make_up_for_them(make_agent, make_schedule):
    schedule = make_schedule(make_agent(overlap_policy="allow"), interval_seconds=60, at=T0)
    dispatch(T0 + timedelta(seconds=60))
    schedule_pause(schedule=schedule)
    for minutes in range(2, 30):
        dispatch(T0 + timedelta(minutes=minutes))
    assert runs_of(schedule) == [T0 + timedelta(seconds=60)]

    resumed = T0 + timedelta(minutes=30, seconds=5)
    schedule_resume(schedule=schedule, at=resumed)
    report = dispatch(resumed)
    assert report == SlotReport()  # nothing due right after resuming: no burst, no catch-up
    dispatch(T0 + timedelta(minutes=31))
    assert runs_of(schedule) == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=31)]
