"""Template helpers for Conveyor's pages: badges, relative times, durations, JSON."""

import json
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

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
            why += f" (until {date_format(timezone.localtime(until), 'DATETIME_FORMAT')})"
    return format_html(
        '<span class="badge badge-{}" data-status="{}" title="{}">{}</span>',
        status,
        status,
        why,
        label,
    )


@register.filter
def timeago(value: datetime | None):
    """ "3 min ago" (or "in 25 s"), with the exact local time on hover."""
    if not value:
        return "—"
    now = timezone.now()
    exact = date_format(timezone.localtime(value), "DATETIME_FORMAT")
    delta = (now - value).total_seconds()
    if abs(delta) < 5:
        text = "just now"
    elif abs(delta) < 60:
        text = f"{round(abs(delta))} s ago" if delta > 0 else f"in {round(-delta)} s"
    elif value <= now:
        text = f"{timesince(value, now, depth=1)} ago"
    else:
        text = f"in {timeuntil(value, now, depth=1)}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        exact,
        text.replace("\xa0", " "),
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
