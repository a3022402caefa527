"""Next run times across daylight-saving changes, with pinned time.

Policy: a local time the clocks jump over runs once, at the first valid instant after the
jump; a local time that happens twice runs once, the first time (fold=0).
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from agents.schedules import Cron, dst_notices, next_runs, resolve, timing_for


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def local_runs(cron, zone, after, count):
    timing = timing_for(kind="cron", cron=cron, timezone=zone)
    return [r.astimezone(ZoneInfo(zone)) for r in next_runs(timing, after=after, count=count)]


def wall(moment):
    return moment.strftime("%Y-%m-%d %H:%M %z")


# --- Europe/Paris: forward 02:00 -> 03:00 on 29 March 2026, back 03:00 -> 02:00 on 25 October.


def test_paris_a_skipped_time_runs_at_the_jump_and_only_that_day():
    runs = local_runs("30 2 * * *", "Europe/Paris", utc(2026, 3, 27, 12), 3)
    assert [wall(r) for r in runs] == [
        "2026-03-28 02:30 +0100",
        "2026-03-29 03:00 +0200",  # 02:30 does not exist: the first valid instant
        "2026-03-30 02:30 +0200",
    ]


def test_paris_several_skipped_times_collapse_into_one_run():
    runs = local_runs("*/20 2-3 * * *", "Europe/Paris", utc(2026, 3, 29, 0, 30), 4)
    assert [wall(r) for r in runs] == [
        "2026-03-29 03:00 +0200",  # 02:00, 02:20, 02:40 and 03:00 itself: one run
        "2026-03-29 03:20 +0200",
        "2026-03-29 03:40 +0200",
        "2026-03-30 02:00 +0200",
    ]


def test_paris_a_repeated_time_runs_once_the_first_time():
    runs = local_runs("30 2 * * *", "Europe/Paris", utc(2026, 10, 24, 12), 3)
    assert [wall(r) for r in runs] == [
        "2026-10-25 02:30 +0200",  # first 02:30 (summer time); the second one does not run
        "2026-10-26 02:30 +0100",
        "2026-10-27 02:30 +0100",
    ]


def test_paris_frequent_runs_in_the_repeated_hour_are_not_doubled():
    runs = local_runs("*/30 * * * *", "Europe/Paris", utc(2026, 10, 24, 23, 45), 6)
    assert [wall(r) for r in runs] == [
        "2026-10-25 02:00 +0200",
        "2026-10-25 02:30 +0200",
        "2026-10-25 03:00 +0100",  # the second 02:00 and 02:30 were run already
        "2026-10-25 03:30 +0100",
        "2026-10-25 04:00 +0100",
        "2026-10-25 04:30 +0100",
    ]
    assert len(set(runs)) == len(runs)


def test_searching_from_inside_the_second_pass_does_not_go_back_in_time():
    # 01:10 UTC is the second 02:10 in Paris.
    runs = local_runs("15 2 * * *", "Europe/Paris", utc(2026, 10, 25, 1, 10), 1)
    assert [wall(r) for r in runs] == ["2026-10-26 02:15 +0100"]


# --- America/New_York: forward 02:00 -> 03:00 on 8 March 2026, back 02:00 -> 01:00 on 1 Nov.


def test_new_york_spring_forward_and_fall_back():
    spring = local_runs("30 2 * * *", "America/New_York", utc(2026, 3, 6, 12), 2)
    assert [wall(r) for r in spring] == ["2026-03-07 02:30 -0500", "2026-03-08 03:00 -0400"]
    fall = local_runs("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2)
    assert [wall(r) for r in fall] == ["2026-11-01 01:30 -0400", "2026-11-02 01:30 -0500"]


def test_new_york_a_time_outside_the_change_keeps_its_wall_clock_time():
    runs = local_runs("0 9 * * *", "America/New_York", utc(2026, 3, 7, 0), 3)
    assert [wall(r) for r in runs] == [
        "2026-03-07 09:00 -0500",
        "2026-03-08 09:00 -0400",
        "2026-03-09 09:00 -0400",
    ]
    # The same wall-clock time, so only 23 hours apart across the change.
    assert runs[1].astimezone(UTC) - runs[0].astimezone(UTC) == timedelta(hours=23)


# --- Australia/Lord_Howe: a 30-minute shift. Forward 02:00 -> 02:30 on 4 October 2026,
# back 02:00 -> 01:30 on 5 April 2026.


def test_lord_howe_half_hour_gap():
    runs = local_runs("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 2, 12), 3)
    assert [wall(r) for r in runs] == [
        "2026-10-03 02:15 +1030",
        "2026-10-04 02:30 +1100",  # 02:15 does not exist; the clocks jumped to 02:30
        "2026-10-05 02:15 +1100",
    ]


def test_lord_howe_half_hour_overlap():
    runs = local_runs("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 3, 12), 3)
    assert [wall(r) for r in runs] == [
        "2026-04-04 01:45 +1100",
        "2026-04-05 01:45 +1100",  # the first 01:45; the second (+1030) does not run
        "2026-04-06 01:45 +1030",
    ]


def test_lord_howe_every_ten_minutes_around_the_gap():
    runs = local_runs("*/10 * * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 15, 15), 4)
    assert [wall(r) for r in runs] == [
        "2026-10-04 01:50 +1030",
        "2026-10-04 02:30 +1100",  # 02:00, 02:10, 02:20 skipped: once, at the jump
        "2026-10-04 02:40 +1100",
        "2026-10-04 02:50 +1100",
    ]


@pytest.mark.parametrize(
    ("zone", "naive", "how", "expected_utc"),
    [
        ("Europe/Paris", datetime(2026, 3, 29, 2, 30), "gap", utc(2026, 3, 29, 1, 0)),
        ("Europe/Paris", datetime(2026, 10, 25, 2, 30), "fold", utc(2026, 10, 25, 0, 30)),
        ("Europe/Paris", datetime(2026, 7, 1, 2, 30), "ok", utc(2026, 7, 1, 0, 30)),
        ("America/New_York", datetime(2026, 3, 8, 2, 0), "gap", utc(2026, 3, 8, 7, 0)),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 0), "gap", utc(2026, 10, 3, 15, 30)),
    ],
)
def test_resolve_says_how_a_wall_clock_time_was_placed(zone, naive, how, expected_utc):
    placed = resolve(naive, ZoneInfo(zone))
    assert (placed.how, placed.at) == (how, expected_utc)


# --- Notices shown when a schedule is saved.


def test_a_time_in_the_gap_and_in_the_overlap_is_flagged_for_the_coming_year():
    notices = dst_notices(Cron.parse("30 2 * * *"), "Europe/Paris", start=utc(2026, 1, 1))
    assert [n.kind for n in notices] == ["gap", "fold"]
    assert notices[0].message == (
        "On Sun 29 Mar 2026 the clocks in Europe/Paris go forward from 02:00 to 03:00: "
        "the 02:30 run happens at 03:00 instead."
    )
    assert notices[1].message == (
        "On Sun 25 Oct 2026 the clocks in Europe/Paris go back from 03:00 to 02:00: "
        "02:30 happens twice and the run happens once, the first time."
    )


def test_a_time_clear_of_the_changes_is_not_flagged():
    assert dst_notices(Cron.parse("0 9 * * *"), "Europe/Paris", start=utc(2026, 1, 1)) == []
    assert dst_notices(Cron.parse("30 2 * * *"), "Asia/Tokyo", start=utc(2026, 1, 1)) == []


def test_a_half_hour_change_flags_only_the_times_inside_it():
    notices = dst_notices(Cron.parse("*/15 * * * *"), "Australia/Lord_Howe", start=utc(2026, 1, 1))
    by_kind = {n.kind: n for n in notices}
    assert [t.strftime("%H:%M") for t in by_kind["gap"].affected] == ["02:00", "02:15"]
    assert [t.strftime("%H:%M") for t in by_kind["fold"].affected] == ["01:30", "01:45"]
    assert by_kind["gap"].runs_at.strftime("%H:%M") == "02:30"
