"""Template helpers for Conveyor's pages: badges, times, durations, JSON.

Pages write a moment one way, in the viewer's time zone (the time-zone middleware activates it):
``|when`` gives "30 Nov 2026, 05:37:19", ``|clock`` its time of day alone (log lines of one
run), and ``|timeago`` "5 min ago" or "in 19 min" with the ``|when`` text on hover. Templates use
these and never ``|date`` or ``|time``; a test greps for them.
"""

import json
import zoneinfo
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from executions.humanize import seconds_in_words

register = template.Library()


@register.simple_tag
def status_badge(execution_or_status, label=None):
    """A coloured badge; given an execution it reads "Retrying (2/3)" and the like."""
    status = getattr(execution_or_status, "status", execution_or_status) or "none"
    if label is None:
        label = getattr(execution_or_status, "status_label", None) or str(status).title()
    # A waiting execution says why on hover, as recorded (wait_reason, wait_until).
    why = ""
    if getattr(execution_or_status, "is_waiting", False):
        why = execution_or_status.get_wait_reason_display()
        until = execution_or_status.wait_until
        if until is not None:
            why += f" (until {when(until)})"
    return format_html(
        '<span class="badge badge-{}" data-status="{}" title="{}">{}</span>',
        status,
        status,
        why,
        label,
    )


# The one absolute format of the pages, and its time-of-day part (Django's date format syntax).
WHEN_FORMAT = "j M Y, H:i:s"
CLOCK_FORMAT = "H:i:s"


@register.filter
def when(value: datetime | None) -> str:
    """ "30 Nov 2026, 05:37:19" in the viewer's time zone."""
    if not value:
        return "—"
    return date_format(timezone.localtime(value), WHEN_FORMAT)


@register.filter
def clock(value: datetime | None) -> str:
    """ "05:37:19" in the viewer's time zone: log lines, where the day goes without saying."""
    if not value:
        return "—"
    return date_format(timezone.localtime(value), CLOCK_FORMAT)


@register.filter
def when_in(value: datetime | None, zone_name: str) -> str:
    """ "30 Nov 2026, 06:37:19" on the clock of ``zone_name`` (a schedule's own zone)."""
    if not value:
        return "—"
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return when(value)
    return date_format(value.astimezone(zone), WHEN_FORMAT)


def relative(value: datetime, now: datetime) -> str:
    """ "just now", "40 s ago", "5 min ago", "3 h ago", "2 days ago"; "in 19 min" ahead."""
    seconds = (value - now).total_seconds()
    ahead, seconds = seconds > 0, abs(seconds)
    if seconds < 5:
        return "just now"
    # Each unit rounded to the nearest: 9 min 59 s to go reads "in 10 min".
    if round(seconds) < 60:
        amount = f"{round(seconds)} s"
    elif round(seconds / 60) < 60:
        amount = f"{round(seconds / 60)} min"
    elif round(seconds / 3600) < 24:
        amount = f"{round(seconds / 3600)} h"
    else:
        days = round(seconds / 86400)
        amount = f"{days} day{'s' if days != 1 else ''}"
    return f"in {amount}" if ahead else f"{amount} ago"


@register.filter
def timeago(value: datetime | None):
    """ "5 min ago" (or "in 19 min"), with the exact local time on hover."""
    if not value:
        return "—"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        when(value),
        relative(value, timezone.now()),
    )


@register.filter
def starts_in(value: datetime | None):
    """ "starts in 19 min" for a delayed run, with the start time on hover."""
    if not value:
        return "—"
    text = relative(value, timezone.now())
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        when(value),
        f"starts {text}" if text.startswith("in ") else "starting",
    )


@register.filter
def duration(value: timedelta | float | None):
    """1.2 s, 45 s, 3 min 4 s."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return seconds_in_words(seconds)


@register.filter
def seconds_until(value: datetime | None):
    if not value:
        return ""
    return seconds_in_words(max(0, (value - timezone.now()).total_seconds()))


@register.filter
def pretty_json(value):
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@register.filter
def percent(value):
    return "—" if value is None else f"{round(value * 100)}%"
