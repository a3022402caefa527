"""The throughput chart, drawn on the server as SVG (no JavaScript).

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


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def throughput_svg(buckets: list[Bucket], window: TimeWindow) -> SafeString:
    if not buckets:
        return mark_safe("")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_ceiling(max(b.total for b in buckets))
    bar_w = plot_w / len(buckets)
    gap = 0.15 * bar_w if bar_w >= 4 else 0
    scale = plot_h / top
    base = TOP + plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Executions per {_unit(window)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    # Grid and y labels.
    for fraction in (0, 0.5, 1):
        y = base - plot_h * fraction
        value = top * fraction
        label = f"{value:g}" if value == int(value) else f"{value:.1f}"
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{label}</text>'
        )
    # One path per series, bars stacked bottom-up.
    paths = {name: [] for name, _ in SERIES}
    for i, bucket in enumerate(buckets):
        x = LEFT + i * bar_w + gap / 2
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
            x = LEFT + i * bar_w
            fmt = "%a %d" if window.key == "7d" else "%H:%M"
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" class="grid"/>'
                f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle" class="axis">'
                f"{escape(local.strftime(fmt))}</text>"
            )
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
            f'<a href="{escape(url)}"><rect class="slice" x="{LEFT + i * bar_w:.2f}" y="{TOP}" '
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
) -> SafeString:
    """A line per series (name, colour, a value or None per bar of ``starts``) over the window's
    time axis: the backlog per queue, the start latency's percentiles. A gap where a value is
    None (no sample, or no run started in that bar); a lone value is a dot. Hovering a point
    shows its bar's time and value."""
    values = [v for _, _, vs in series for v in vs if v is not None]
    if not starts or not values:
        return mark_safe("")
    format_value = format_value or (lambda v: f"{v:g}")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max(values)
    top = nice_ceiling(math.ceil(top)) if top >= 1 else top * 1.1 or 1
    step = plot_w / len(starts)
    base = TOP + plot_h

    def x(i: int) -> float:
        return LEFT + (i + 0.5) * step

    def y(v: float) -> float:
        return base - plot_h * v / top

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for fraction in (0, 0.5, 1):
        yy = base - plot_h * fraction
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(format_value(top * fraction))}</text>"
        )
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
            xx = LEFT + i * step
            fmt = "%a %d" if window.key == "7d" else "%H:%M"
            parts.append(
                f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{base}" y2="{base + 4}" class="grid"/>'
                f'<text x="{xx:.1f}" y="{HEIGHT - 6}" text-anchor="middle" class="axis">'
                f"{escape(local.strftime(fmt))}</text>"
            )
    # A hover target per bar with every series' value at that time.
    for i, start in enumerate(starts):
        shown = [f"{name}: {format_value(vs[i])}" for name, _, vs in series if vs[i] is not None]
        if not shown:
            continue
        title = f"{timezone.localtime(start):%a %d %b %H:%M}: " + ", ".join(shown)
        parts.append(
            f'<rect class="slice" x="{LEFT + i * step:.2f}" y="{TOP}" width="{step:.2f}" '
            f'height="{plot_h}"><title>{escape(title)}</title></rect>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers and escaped text only
