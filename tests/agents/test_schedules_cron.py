"""Cron expressions: what is accepted, what is refused (in words), and how they read."""

from datetime import UTC, datetime

import pytest

from agents.schedules import (
    Cron,
    CronError,
    describe_cron,
    describe_interval,
    next_runs,
    timing_for,
)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "field", "values"),
    [
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("0-10/5 * * * *", "minutes", (0, 5, 10)),
        ("50/5 * * * *", "minutes", (50, 55)),
        ("1,2,40-42 * * * *", "minutes", (1, 2, 40, 41, 42)),
        ("0 9-17/4 * * *", "hours", (9, 13, 17)),
        ("0 0 * jan-mar,DEC *", "months", frozenset({1, 2, 3, 12})),
        ("0 0 * * mon-fri", "weekdays", frozenset({1, 2, 3, 4, 5})),
        ("0 0 * * 7", "weekdays", frozenset({0})),
        ("0 0 * * sun,sat", "weekdays", frozenset({0, 6})),
    ],
)
def test_fields_take_ranges_steps_lists_and_names(text, field, values):
    assert getattr(Cron.parse(text), field) == values


def test_shorthands_expand_to_their_five_fields():
    assert Cron.parse("@daily").text == "0 0 * * *"
    assert Cron.parse("@hourly").text == "0 * * * *"
    assert Cron.parse("@weekly").text == "0 0 * * 0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter a cron expression"),
        ("* * * *", "five fields"),
        ("60 * * * *", r"Minute: 60 is out of range \(0 to 59\)"),
        ("* 24 * * *", "Hour: 24 is out of range"),
        ("* * 0 * *", "Day of month: 0 is out of range"),
        ("* * * 13 *", "Month: 13 is out of range"),
        ("* * * * 8", "Day of week: 8 is out of range"),
        ("* * * * fri-mon", "runs backwards"),
        ("*/0 * * * *", "a step of 0 never advances"),
        ("? * * * *", "is not understood"),
        ("0 0 * foo *", "“foo” is not a number or a known name"),
        ("0 0 30 2 *", "never runs"),
    ],
)
def test_bad_expressions_are_refused_with_a_message_naming_the_field(text, message):
    with pytest.raises(CronError, match=message):
        Cron.parse(text)


def test_day_of_month_and_day_of_week_both_restricted_run_on_either():
    # The 13th, or any Friday (Vixie cron's rule).
    timing = timing_for(kind="cron", cron="0 12 13 * fri", timezone="UTC")
    runs = next_runs(timing, after=utc(2026, 2, 1), count=4)
    assert [r.day for r in runs] == [6, 13, 20, 27]


def test_a_starred_day_of_week_leaves_the_day_of_month_alone_in_charge():
    timing = timing_for(kind="cron", cron="0 0 31 * *", timezone="UTC")
    runs = next_runs(timing, after=utc(2026, 1, 1), count=3)
    assert [(r.month, r.day) for r in runs] == [(1, 31), (3, 31), (5, 31)]


def test_29_february_is_found_years_ahead():
    timing = timing_for(kind="cron", cron="0 0 29 2 *", timezone="UTC")
    assert next_runs(timing, after=utc(2026, 3, 1), count=2) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("0 9 * * 1-5", "every weekday at 09:00 Europe/Paris"),
        ("30 18 * * *", "every day at 18:30 Europe/Paris"),
        ("0 9,17 * * *", "every day at 09:00 and 17:00 Europe/Paris"),
        ("0 8 * * mon", "every Monday at 08:00 Europe/Paris"),
        ("0 10 * * sat,sun", "every Saturday and Sunday at 10:00 Europe/Paris"),
        ("0 6 1 * *", "on the 1st of every month at 06:00 Europe/Paris"),
        ("0 0 1 1 *", "on the 1st of January at 00:00 Europe/Paris"),
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("*/10 * * * *", "every 10 minutes Europe/Paris"),
        ("15 * * * *", "every hour at :15 Europe/Paris"),
        ("0 */2 * * *", "every 2 hours on the hour Europe/Paris"),
        ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:59 on weekdays Europe/Paris"),
        ("5 4 * jan *", "every day in January at 04:05 Europe/Paris"),
    ],
)
def test_an_expression_reads_as_words_with_its_zone(text, words):
    assert describe_cron(text, "Europe/Paris") == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (2, "every 2 seconds"),
        (60, "every minute"),
        (90, "every 90 seconds"),
        (300, "every 5 minutes"),
        (5400, "every 90 minutes"),
        (3600, "every hour"),
        (86400 * 2, "every 2 days"),
    ],
)
def test_an_interval_reads_in_its_largest_whole_unit(seconds, words):
    assert describe_interval(seconds) == words
