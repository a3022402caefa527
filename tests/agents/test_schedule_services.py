"""Creating, changing, pausing and resuming schedules: validation per field, and next_run_at
recomputed on every change (so that the next tick applies it, with nothing to restart)."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from agents.models import SkippedSlot
from agents.schedule_services import (
    schedule_create,
    schedule_delete,
    schedule_dst_notices,
    schedule_next_runs,
    schedule_pause,
    schedule_resume,
    schedule_update,
)
from tests.conftest import utc

pytestmark = pytest.mark.django_db

NOON = utc(2026, 6, 1, 12, 0, 0)


def errors_of(excinfo) -> dict:
    return excinfo.value.message_dict


def test_a_cron_schedule_starts_at_its_next_slot_in_its_zone(make_agent):
    schedule = schedule_create(
        agent=make_agent(), kind="cron", cron="0 9 * * 1-5", timezone="Europe/Paris", at=NOON
    )
    # Monday 1 June 2026, 12:00 UTC: next weekday 09:00 in Paris (UTC+2) is Tuesday 07:00 UTC.
    assert schedule.next_run_at == utc(2026, 6, 2, 7, 0)
    assert schedule_next_runs(schedule, at=NOON, count=5) == [
        utc(2026, 6, 2, 7),
        utc(2026, 6, 3, 7),
        utc(2026, 6, 4, 7),
        utc(2026, 6, 5, 7),
        utc(2026, 6, 8, 7),
    ]


def test_an_interval_schedule_first_runs_one_interval_after_creation(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="interval", interval_seconds=90, at=NOON)
    assert schedule.next_run_at == NOON + timedelta(seconds=90)
    assert schedule.cron == "" and schedule.run_at is None


def test_a_one_off_schedule_runs_at_its_time_and_must_be_in_the_future(make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="once", run_at=NOON + timedelta(hours=1), at=NOON)
    assert schedule.next_run_at == NOON + timedelta(hours=1)
    with pytest.raises(ValidationError) as excinfo:
        schedule_create(agent=agent, kind="once", run_at=NOON - timedelta(seconds=1), at=NOON)
    assert errors_of(excinfo) == {"run_at": ["Choose a time in the future."]}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "cron", "Minute: 61 is out of range"),
        ({"kind": "cron", "cron": ""}, "cron", "Enter a cron expression"),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"kind": "interval", "interval_seconds": None}, "interval_seconds", "how many seconds"),
        ({"kind": "interval", "interval_seconds": 1}, "interval_seconds", "Enter between 2"),
        ({"kind": "once", "run_at": None}, "run_at", "Enter the date and time"),
        ({"kind": "hourly"}, "kind", "Choose a cron expression, an interval"),
        ({"kind": "interval", "interval_seconds": 60, "catch_up": "all"}, "catch_up", "missed"),
    ],
)
@override_settings(CONVEYOR_DISPATCH_INTERVAL=2)
def test_bad_fields_are_refused_with_a_message_for_that_field(make_agent, fields, field, message):
    with pytest.raises(ValidationError) as excinfo:
        schedule_create(agent=make_agent(), at=NOON, **fields)
    assert field in errors_of(excinfo)
    assert message in " ".join(errors_of(excinfo)[field])


def test_input_the_agent_would_reject_is_refused_when_saved(make_agent):
    agent = make_agent(config={"function": "demo.flaky"})
    with pytest.raises(ValidationError) as excinfo:
        schedule_create(
            agent=agent, kind="interval", interval_seconds=60, input={"fail_times": "x"}, at=NOON
        )
    assert "“fail_times” must be a number" in errors_of(excinfo)["input"][0]


def test_changing_the_cron_expression_recomputes_the_next_run(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="cron", cron="0 9 * * *", at=NOON)
    assert schedule.next_run_at == utc(2026, 6, 2, 9)
    schedule_update(schedule=schedule, cron="30 12 * * *", at=NOON)
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 6, 1, 12, 30)


def test_changing_the_zone_moves_the_next_run(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="cron", cron="0 18 * * *", at=NOON)
    schedule_update(schedule=schedule, timezone="America/New_York", at=NOON)
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 6, 1, 22)  # 18:00 EDT


def test_changing_only_the_input_keeps_the_next_run(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="interval", interval_seconds=60, at=NOON)
    schedule_update(schedule=schedule, input={"a": 1}, at=NOON + timedelta(seconds=30))
    schedule.refresh_from_db()
    assert schedule.input == {"a": 1}
    assert schedule.next_run_at == NOON + timedelta(seconds=60)


def test_a_new_interval_starts_a_new_grid_from_now(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="interval", interval_seconds=60, at=NOON)
    later = NOON + timedelta(seconds=30)
    schedule_update(schedule=schedule, interval_seconds=600, at=later)
    schedule.refresh_from_db()
    assert schedule.next_run_at == later + timedelta(seconds=600)


def test_switching_kind_clears_the_fields_of_the_old_kind(make_agent):
    schedule = schedule_create(agent=make_agent(), kind="cron", cron="0 9 * * *", at=NOON)
    schedule_update(schedule=schedule, kind="interval", interval_seconds=120, at=NOON)
    schedule.refresh_from_db()
    assert (schedule.kind, schedule.cron, schedule.interval_seconds) == ("interval", "", 120)
    assert schedule.next_run_at == NOON + timedelta(seconds=120)


def test_a_paused_schedule_shows_no_next_runs_and_resumes_after_now_without_catching_up(
    make_agent,
):
    schedule = schedule_create(agent=make_agent(), kind="interval", interval_seconds=60, at=NOON)
    assert schedule_pause(schedule=schedule) is True
    assert schedule_pause(schedule=schedule) is False
    assert schedule_next_runs(schedule, at=NOON) == []

    an_hour_later = NOON + timedelta(minutes=60, seconds=10)
    assert schedule_resume(schedule=schedule, at=an_hour_later) is True
    assert schedule_resume(schedule=schedule, at=an_hour_later) is False
    schedule.refresh_from_db()
    # Same grid (every minute from 12:00), first slot after now: the paused hour is not owed.
    assert schedule.next_run_at == NOON + timedelta(minutes=61)
    assert not schedule.is_paused


def test_a_one_off_whose_time_passed_while_paused_is_recorded_as_skipped(make_agent):
    run_at = NOON + timedelta(minutes=5)
    schedule = schedule_create(agent=make_agent(), kind="once", run_at=run_at, at=NOON)
    schedule_pause(schedule=schedule)
    schedule_resume(schedule=schedule, at=NOON + timedelta(minutes=10))
    schedule.refresh_from_db()
    assert schedule.next_run_at is None
    skipped = SkippedSlot.objects.get(schedule=schedule)
    assert (skipped.slot_at, skipped.reason) == (run_at, "the schedule was paused at that time")


def test_deleting_a_schedule_keeps_its_past_runs(make_agent):
    from executions.services import execution_request

    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=60, at=NOON)
    execution = execution_request(
        agent=agent, trigger="schedule", schedule=schedule, scheduled_for=NOON
    )
    schedule_delete(schedule=schedule)
    execution.refresh_from_db()
    assert execution.schedule is None and execution.scheduled_for == NOON


def test_a_cron_time_in_a_dst_change_is_flagged_not_refused(make_agent):
    schedule = schedule_create(
        agent=make_agent(), kind="cron", cron="30 2 * * *", timezone="Europe/Paris", at=NOON
    )
    notices = schedule_dst_notices(schedule, at=NOON)
    # From June 2026: back in October, forward in March 2027.
    assert [(n.kind, n.day.isoformat()) for n in notices] == [
        ("fold", "2026-10-25"),
        ("gap", "2027-03-28"),
    ]
    interval = schedule_create(agent=make_agent(), kind="interval", interval_seconds=60, at=NOON)
    assert schedule_dst_notices(interval, at=NOON) == []


def test_a_one_off_reads_in_the_pages_date_format(make_agent):
    from django.utils import timezone

    from agents.schedule_services import describe

    schedule = schedule_create(agent=make_agent(), kind="once", run_at=utc(2030, 11, 30, 9, 0))
    with timezone.override("UTC"):
        assert describe(schedule) == "once, on 30 Nov 2030, 09:00:00 UTC"
