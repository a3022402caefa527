"""The dashboard's charts, drawn on the server as SVG (no JavaScript): the throughput's bars and
the backlog's and start latency's lines.

Both kinds share their y axis (:func:`y_axis`: round ticks, 1, 2 or 5 x 10^n, or minute and hour
steps for durations, and a left margin as wide as the longest label) and their time axis
(labels kept inside the chart at its ends). On a phone a chart keeps its width and scrolls
sideways in its card, opened at its newest end (static/ops/charts.js).

Bars are stacked per bucket (succeeded, failed, other) and each series is one ``<path>``, so a
chart of a few hundred bars stays a few kilobytes per series. Bars are minutes in the last-hour
window (from the rows) and hours in the day and week windows (from the hourly rollups, the
current hour from the rows: ops.selectors.window_throughput). On top, a transparent link per
slice (the window's ``slice``: one or several bars) opens the admin list of that slice's
executions and shows its figures on hover.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .selectors import Bucket, TimeWindow, admin_executions_url

WIDTH, HEIGHT = 960, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24
SERIES = (("succeeded", "#4cc38a"), ("failed", "#e5604e"), ("other", "#9fb0d0"))
# Where the time axis has a label.
TICKS = {"1h": timedelta(minutes=10), "24h": timedelta(hours=3), "7d": timedelta(days=1)}


#: The most steps above 0 a y axis has (so at most 5 labels).
MAX_STEPS = 4
#: Steps of a duration axis beyond a minute: minutes, hours, days (in seconds).
DURATION_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: Width of a character of the axis labels (11 px system-ui digits are about 6.2 px), rounded up.
CHAR_WIDTH = 7


def axis_ticks(top: float, *, seconds: bool = False) -> list[float]:
    """Round values for a y axis from 0 to at least ``top``, at most :data:`MAX_STEPS` steps:
    the first step that fits of 1, 2 or 5 x 10^n (whole numbers for counts), or for durations
    (``seconds``) of 1, 2, 5 x 10^n seconds up to 50 s, then :data:`DURATION_STEPS`, then
    1, 2, 5 x 10^n days."""
    top = top if top > 0 else 1
    for step in _steps(top, seconds=seconds):
        n = math.ceil(top / step - 1e-9)
        if n <= MAX_STEPS:
            return [_clean(step * i) for i in range(max(n, 1) + 1)]
    raise AssertionError("unreachable: the steps grow without end")


def _steps(top: float, *, seconds: bool):
    """The candidate steps of :func:`axis_ticks`, smallest first, from about top / MAX_STEPS."""
    unit, whole = 1.0, not seconds
    if seconds and top / MAX_STEPS > 50:
        yield from DURATION_STEPS
        unit, whole = 86400.0, True
    magnitude = 10.0 ** math.floor(math.log10(top / unit / MAX_STEPS))
    if whole:
        magnitude = max(1.0, magnitude)
    while True:
        for m in (1, 2, 5):
            yield m * magnitude * unit
        magnitude *= 10


def _clean(value: float) -> float:
    """A tick's value without the float dust of 0.1 x 3."""
    return float(f"{value:.6g}")


def count_label(value: float) -> str:
    return f"{value:g}"


def duration_label(seconds: float) -> str:
    """A duration axis label, short and exact for the ticks of :func:`axis_ticks`: "0", "0.2 s",
    "50 s", "90 s", "5 min", "2 h", "7 d"."""
    if seconds == 0:
        return "0"
    if seconds < 60 or (seconds < 3600 and seconds % 60):
        return f"{seconds:g} s"
    if seconds < 3600 or seconds % 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86400 or seconds % 86400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86400:g} d"


def y_axis(top: float, *, seconds: bool = False) -> tuple[list[float], list[str], int]:
    """The y axis of a chart whose highest value is ``top``: its ticks, their labels and the
    left margin that fits the longest label."""
    ticks = axis_ticks(top, seconds=seconds)
    labels = [(duration_label if seconds else count_label)(t) for t in ticks]
    left = max(LEFT, 14 + CHAR_WIDTH * max(len(label) for label in labels))
    return ticks, labels, left


def _y_labels(ticks, labels, *, left: int, base: float, plot_h: float) -> list[str]:
    parts = []
    for tick, label in zip(ticks, labels, strict=True):
        y = base - plot_h * tick / ticks[-1]
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(label)}</text>"
        )
    return parts


def _time_label(x: float, base: float, text: str) -> str:
    """A tick and its label on the time axis, kept inside the chart at its ends."""
    half = CHAR_WIDTH * len(text) / 2
    anchor, tx = "middle", x
    if x + half > WIDTH - 1:
        anchor, tx = "end", WIDTH - 1
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" class="grid"/>'
        f'<text x="{tx:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}" class="axis">'
        f"{escape(text)}</text>"
    )


def throughput_svg(buckets: list[Bucket], window: TimeWindow) -> SafeString:
    if not buckets:
        return mark_safe("")
    ticks, labels, left = y_axis(max(b.total for b in buckets))
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM
    top = ticks[-1]
    bar_w = plot_w / len(buckets)
    gap = 0.15 * bar_w if bar_w >= 4 else 0
    scale = plot_h / top
    base = TOP + plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Executions per {_unit(window)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts += _y_labels(ticks, labels, left=left, base=base, plot_h=plot_h)
    # One path per series, bars stacked bottom-up.
    paths = {name: [] for name, _ in SERIES}
    for i, bucket in enumerate(buckets):
        x = left + i * bar_w + gap / 2
        y = base
        for name, _ in SERIES:
            value = getattr(bucket, name)
            if value:
                h = value * scale
                y -= h
                paths[name].append(f"M{x:.2f} {y:.2f}h{bar_w - gap:.2f}v{h:.2f}h{gap - bar_w:.2f}z")
    for name, colour in SERIES:
        if paths[name]:
            parts.append(f'<path class="{name}" fill="{colour}" d="{"".join(paths[name])}"/>')
    # Time axis.
    tick_minutes = int(TICKS[window.key].total_seconds() // 60)
    for i, bucket in enumerate(buckets):
        local = timezone.localtime(bucket.start)
        if i and (local.hour * 60 + local.minute) % tick_minutes == 0:
            fmt = "%a %d" if window.key == "7d" else "%H:%M"
            parts.append(_time_label(left + i * bar_w, base, local.strftime(fmt)))
    # Clickable slices with their figures on hover.
    per_slice = max(1, round(window.slice / window.bucket))
    changelist = admin_executions_url()
    for i in range(0, len(buckets), per_slice):
        group = buckets[i : i + per_slice]
        start, end = group[0].start, group[-1].start + window.bucket
        ok, bad, other = (sum(getattr(b, n) for b in group) for n, _ in SERIES)
        when = timezone.localtime(start)
        title = (
            f"{when:%a %d %b %H:%M} to {timezone.localtime(end):%H:%M}: "
            f"{ok} succeeded, {bad} failed, {other} other"
        )
        url = admin_executions_url(base=changelist, created_at__gte=start, created_at__lt=end)
        parts.append(
            f'<a href="{escape(url)}"><rect class="slice" x="{left + i * bar_w:.2f}" y="{TOP}" '
            f'width="{bar_w * len(group):.2f}" height="{plot_h}"><title>{escape(title)}</title>'
            "</rect></a>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped text only


def _unit(window: TimeWindow) -> str:
    return "hour" if window.bucket >= timedelta(hours=1) else "minute"


# Colours of the line charts' series, in order (a queue's colour is its place in the list).
LINE_COLOURS = ("#3656d6", "#e08a1e", "#4cc38a", "#b04fc9", "#e5604e", "#2a9bb5", "#7a7f8c")


def lines_svg(
    starts: list,
    series: list[tuple[str, str, list[float | None]]],
    window: TimeWindow,
    *,
    label: str,
    format_value=None,
    seconds: bool = False,
) -> SafeString:
    """A line per series (name, colour, a value or None per bar of ``starts``) over the window's
    time axis: the backlog per queue, the start latency's percentiles. A gap where a value is
    None (no sample, or no run started in that bar); a lone value is a dot. Hovering a point
    shows its bar's time and value (``format_value``). The y axis counts, or with ``seconds``
    is a duration (:func:`y_axis`)."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    if not starts or not values:
        return mark_safe("")
    format_value = format_value or (lambda v: f"{v:g}")
    ticks, labels, left = y_axis(max(values), seconds=seconds)
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM
    top = ticks[-1]
    step = plot_w / len(starts)
    base = TOP + plot_h

    def x(i: int) -> float:
        return left + (i + 0.5) * step

    def y(v: float) -> float:
        return base - plot_h * v / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    parts += _y_labels(ticks, labels, left=left, base=base, plot_h=plot_h)
    for name, colour, vs in series:
        path, dots = [], []
        previous = None
        for i, v in enumerate(vs):
            if v is None:
                previous = None
                continue
            path.append(f"{'L' if previous is not None else 'M'}{x(i):.2f} {y(v):.2f}")
            alone = previous is None and (i + 1 >= len(vs) or vs[i + 1] is None)
            if alone:
                dots.append(f'<circle cx="{x(i):.2f}" cy="{y(v):.2f}" r="2.5" fill="{colour}"/>')
            previous = v
        parts.append(
            f'<g class="series" data-series="{escape(name)}">'
            f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-linejoin="round"/>{"".join(dots)}</g>'
        )
    tick_minutes = int(TICKS[window.key].total_seconds() // 60)
    for i, start in enumerate(starts):
        local = timezone.localtime(start)
        if i and (local.hour * 60 + local.minute) % tick_minutes == 0:
            fmt = "%a %d" if window.key == "7d" else "%H:%M"
            parts.append(_time_label(left + i * step, base, local.strftime(fmt)))
    # A hover target per bar with every series' value at that time.
    for i, start in enumerate(starts):
        shown = [f"{name}: {format_value(vs[i])}" for name, _, vs in series if vs[i] is not None]
        if not shown:
            continue
        title = f"{timezone.localtime(start):%a %d %b %H:%M}: " + ", ".join(shown)
        parts.append(
            f'<rect class="slice" x="{left + i * step:.2f}" y="{TOP}" width="{step:.2f}" '
            f'height="{plot_h}"><title>{escape(title)}</title></rect>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped text only
