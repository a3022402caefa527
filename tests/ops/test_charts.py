"""The dashboard's SVG charts (ops.charts): round y-axis ticks, labels short enough for the
margin they get, and time labels kept inside the chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from ops import charts, selectors
from ops.charts import CHAR_WIDTH, axis_ticks, duration_label, lines_svg, throughput_svg


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (38, [0, 10, 20, 30, 40]),
        (260, [0, 100, 200, 300]),
    ],
)
def test_a_count_axis_has_round_whole_ticks(top, ticks):
    assert axis_ticks(top) == ticks


@pytest.mark.parametrize(
    ("top", "labels"),
    [
        (0.3, ["0", "0.1 s", "0.2 s", "0.3 s"]),
        (8, ["0", "2 s", "4 s", "6 s", "8 s"]),
        (100, ["0", "50 s", "100 s"]),  # was 0, 50 s, 1 min 40 s
        (250, ["0", "2 min", "4 min", "6 min"]),
        (500, ["0", "5 min", "10 min"]),  # was 0, 250 s, 500 s
        (3 * 3600, ["0", "1 h", "2 h", "3 h"]),
        (10 * 86400, ["0", "5 d", "10 d"]),
    ],
)
def test_a_duration_axis_steps_in_round_seconds_minutes_or_hours(top, labels):
    assert [duration_label(t) for t in axis_ticks(top, seconds=True)] == labels


def test_every_tick_covers_the_highest_value_within_four_steps():
    for top in [0.01, 0.7, 1.5, 9, 11, 59, 61, 99, 101, 599, 601, 3599, 4000, 90000, 10**6]:
        for seconds in (False, True):
            ticks = axis_ticks(top, seconds=seconds)
            assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 5, (top, ticks)


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _labels(svg: str) -> list[tuple[float, str, str]]:
    """(x, anchor, text) of every axis label."""
    return [
        (float(x), anchor, text)
        for x, anchor, text in re.findall(
            r'<text x="([\d.]+)" y="[\d.]+" text-anchor="(\w+)" class="axis">([^<]*)</text>', svg
        )
    ]


def test_the_y_labels_get_a_margin_as_wide_as_the_longest_one():
    window = selectors.WINDOWS["1h"]
    starts = [T0 + timedelta(minutes=i) for i in range(60)]
    svg = lines_svg(
        starts,
        [("95th percentile", "#000", [100.0] + [None] * 59)],
        window,
        label="Start latency",
        seconds=True,
    )
    y_labels = [(x, text) for x, anchor, text in _labels(svg) if anchor == "end" and x < 200]
    assert [text for _, text in y_labels] == ["0", "50 s", "100 s"]
    for x, text in y_labels:
        assert x - CHAR_WIDTH * len(text) >= 0, text  # the label starts inside the chart
    assert "min 40" not in svg.split("<title>")[0]  # no long duration on the axis


def test_a_time_label_at_the_right_end_stays_inside_the_chart():
    window = selectors.WINDOWS["7d"]
    # The last bar starts at midnight: its "Tue 08" label would stick out on the right.
    starts = [
        datetime(2026, 12, 8, 0, 0, tzinfo=UTC) - timedelta(hours=167 - i) for i in range(168)
    ]
    buckets = [selectors.Bucket(start=s, succeeded=1) for s in starts]
    from django.utils import timezone

    with timezone.override(UTC):
        svg = throughput_svg(buckets, window)
    for x, anchor, text in _labels(svg):
        half = CHAR_WIDTH * len(text) / 2
        right = x if anchor == "end" else x + (half if anchor == "middle" else 2 * half)
        assert right <= charts.WIDTH, (x, anchor, text)
    assert any(anchor == "end" and x == charts.WIDTH - 1 for x, anchor, _ in _labels(svg))
