"""Pages write a moment one way: "30 Nov 2026, 05:37:19" or "5 min ago" / "in 19 min"."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from executions.templatetags.conveyor import clock, relative, starts_in, timeago, when
from tests.conftest import utc

T0 = utc(2026, 11, 30, 5, 37, 19)


def test_a_moment_reads_day_month_year_and_time_in_the_viewers_zone():
    with timezone.override("Europe/Paris"):
        assert when(T0) == "30 Nov 2026, 06:37:19"
        assert clock(T0) == "06:37:19"
    with timezone.override("America/New_York"):
        assert when(T0) == "30 Nov 2026, 00:37:19"
    assert when(None) == "—"


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (timedelta(seconds=2), "just now"),
        (timedelta(seconds=-40), "40 s ago"),
        (timedelta(minutes=-5, seconds=-20), "5 min ago"),
        (timedelta(minutes=19, seconds=10), "in 19 min"),
        (timedelta(hours=-3, minutes=-59), "4 h ago"),
        (timedelta(minutes=9, seconds=59), "in 10 min"),
        (timedelta(days=1, hours=2), "in 1 day"),
        (timedelta(days=-12), "12 days ago"),
    ],
)
def test_a_relative_time_reads_in_short_units(offset, words):
    assert relative(T0 + offset, T0) == words


def test_a_relative_time_shows_the_exact_moment_on_hover():
    at = timezone.now() - timedelta(minutes=5, seconds=3)
    with timezone.override("UTC"):
        html = timeago(at)
        assert f'title="{when(at)}"' in html
    assert ">5 min ago</time>" in html


def test_a_delayed_run_starts_in_a_while():
    html = starts_in(timezone.now() + timedelta(minutes=19, seconds=10))
    assert ">starts in 19 min</time>" in html


def page_templates():
    root = Path(settings.BASE_DIR) / "templates"
    # The admin keeps Django's own formats; every other page uses Conveyor's.
    return [p for p in root.rglob("*.html") if "admin" not in p.relative_to(root).parts]


def test_page_templates_write_moments_only_through_conveyors_filters():
    other_formats = re.compile(
        r"\|\s*(date|time|naturaltime|naturalday|timesince|timeuntil)\b|{%\s*now\b"
    )
    offenders = [
        f"{path.name}: {match.group(0)}"
        for path in page_templates()
        for match in other_formats.finditer(path.read_text())
    ]
    assert page_templates() and offenders == []


def test_page_templates_show_no_datetime_field_unformatted():
    # A bare {{ execution.created_at }} would fall back to Django's "Nov. 30, 2026, 5:37 a.m.".
    bare = re.compile(r"{{\s*[\w.]*(_at|_before|_until|next_runs?|since)\s*}}")
    offenders = [
        f"{path.name}: {match.group(0)}"
        for path in page_templates()
        for match in bare.finditer(path.read_text())
    ]
    assert offenders == []
