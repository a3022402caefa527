"""The verbs of schedules: create, update, pause, resume, delete.

Every change writes ``next_run_at`` in the same transaction, with the row locked against the
dispatcher's tick, so the next tick applies it: there is nothing to restart and nothing to copy
into beat's tables (see ``executions/dispatch.py``). Validation errors come back as one
``ValidationError`` with a list of messages per field, like ``agents.services``.

Time rules (the timing itself is computed in ``agents.schedules``):

* cron: the first slot after now.
* interval: slots on a fixed grid, first one ``interval`` seconds after creation; an edit that
  keeps the interval keeps the grid, one that changes it starts a new grid from now.
* once: the given instant, which must be in the future when it is set.
* resume: the first slot after now. Slots that passed while the schedule was paused do not run
  (pausing means "do not run"); a one-off whose time passed while paused is recorded as skipped.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .kinds import get_kind
from .kinds.base import InvalidInputError
from .models import Agent, Schedule, SkippedSlot
from .schedules import (
    Cron,
    CronError,
    DstNotice,
    Timing,
    available_zones,
    describe_cron,
    describe_interval,
    dst_notices,
    next_runs,
    timing_for,
)

logger = logging.getLogger("conveyor.schedules")

TIMING_FIELDS = ("kind", "cron", "timezone", "interval_seconds", "run_at")
SCHEDULE_FIELDS = (*TIMING_FIELDS, "input", "catch_up")
# The longest interval accepted: a year.
MAX_INTERVAL = 366 * 86400
PAUSED_AT_ITS_TIME = "the schedule was paused at that time"


def schedule_timing(schedule: Schedule, *, anchor: datetime | None = None) -> Timing:
    """The timing of a schedule; an interval's grid goes through its next (or last) slot."""
    return timing_for(
        kind=schedule.kind,
        cron=schedule.cron,
        timezone=schedule.timezone,
        interval_seconds=schedule.interval_seconds,
        run_at=schedule.run_at,
        anchor=schedule.next_run_at or schedule.last_slot_at or anchor,
    )


def _validate(schedule: Schedule, *, at: datetime, run_at_changed: bool) -> None:
    errors: dict[str, list[str]] = {}

    def error(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    kind = schedule.kind
    if kind not in Schedule.Kind.values:
        error("kind", "Choose a cron expression, an interval or a one-off date and time.")
    if schedule.timezone not in available_zones():
        error("timezone", "Choose an IANA time zone, such as Europe/Paris or UTC.")
    if schedule.catch_up not in Schedule.CatchUp.values:
        error("catch_up", "Choose whether a missed slot runs once (latest) or not at all (none).")
    if kind == Schedule.Kind.CRON:
        schedule.interval_seconds, schedule.run_at = None, None
        try:
            schedule.cron = Cron.parse(schedule.cron).text
        except CronError as exc:
            error("cron", str(exc))
    elif kind == Schedule.Kind.INTERVAL:
        schedule.cron, schedule.run_at = "", None
        seconds = schedule.interval_seconds
        least = settings.CONVEYOR_DISPATCH_INTERVAL
        if seconds is None:
            error("interval_seconds", "Enter how many seconds apart the runs are.")
        elif not least <= seconds <= MAX_INTERVAL:
            error(
                "interval_seconds",
                f"Enter between {least} and {MAX_INTERVAL} seconds (Conveyor looks for due "
                f"schedules every {least} s).",
            )
    elif kind == Schedule.Kind.ONCE:
        schedule.cron, schedule.interval_seconds = "", None
        if schedule.run_at is None:
            error("run_at", "Enter the date and time of the run.")
        elif run_at_changed and schedule.run_at <= at:
            error("run_at", "Choose a time in the future.")
    agent_kind = get_kind(schedule.agent.kind)
    if agent_kind is not None:
        try:
            agent_kind.validate_input(schedule.agent.config, schedule.input)
        except InvalidInputError as exc:
            error("input", exc.message)
    try:
        schedule.full_clean(exclude=["agent", "next_run_at", "last_slot_at"])
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            if name not in errors:
                errors[name] = messages
    if errors:
        raise ValidationError(errors)


def _first_slot(schedule: Schedule, *, at: datetime, new_grid: bool = False) -> datetime | None:
    """The first slot after ``at``; ``new_grid``: an interval starts afresh from ``at``."""
    if schedule.kind == Schedule.Kind.ONCE:
        if schedule.run_at > at and (
            schedule.last_slot_at is None or schedule.run_at > schedule.last_slot_at
        ):
            return schedule.run_at
        return None
    if schedule.kind == Schedule.Kind.INTERVAL and (
        new_grid or not (schedule.next_run_at or schedule.last_slot_at)
    ):
        return at + timedelta(seconds=schedule.interval_seconds)
    return schedule_timing(schedule).next_after(at)


def schedule_create(
    *,
    agent: Agent,
    kind: str,
    cron: str = "",
    timezone: str = "UTC",
    interval_seconds: int | None = None,
    run_at: datetime | None = None,
    input: Any = None,
    catch_up: str = Schedule.CatchUp.LATEST,
    is_paused: bool = False,
    at: datetime | None = None,
) -> Schedule:
    """Add a schedule to ``agent``; raises ValidationError with per-field messages."""
    at = at or _now()
    schedule = Schedule(
        agent=agent,
        kind=kind,
        cron=cron or "",
        timezone=timezone or "UTC",
        interval_seconds=interval_seconds,
        run_at=run_at,
        input=input,
        catch_up=catch_up,
        is_paused=is_paused,
    )
    _validate(schedule, at=at, run_at_changed=True)
    schedule.next_run_at = _first_slot(schedule, at=at)
    schedule.save(force_insert=True)
    _log("schedule_created", schedule)
    return schedule


def schedule_update(*, schedule: Schedule, at: datetime | None = None, **fields: Any) -> Schedule:
    """Change a schedule. A change of timing takes effect from now (the next tick reads it)."""
    unknown = set(fields) - set(SCHEDULE_FIELDS)
    if unknown:
        raise TypeError(f"Unknown schedule fields: {', '.join(sorted(unknown))}")
    at = at or _now()
    with transaction.atomic():
        locked = Schedule.objects.select_for_update().select_related("agent").get(pk=schedule.pk)
        changed = {name for name, value in fields.items() if getattr(locked, name) != value}
        for name in changed:
            setattr(locked, name, fields[name])
        _validate(locked, at=at, run_at_changed="run_at" in changed)
        if changed & set(TIMING_FIELDS):
            # A new interval starts a new grid, from now.
            new_grid = bool(changed & {"kind", "interval_seconds"})
            locked.next_run_at = _first_slot(locked, at=at, new_grid=new_grid)
        locked.save()
    for name in (*SCHEDULE_FIELDS, "next_run_at", "last_slot_at", "updated_at"):
        setattr(schedule, name, getattr(locked, name))
    _log("schedule_updated", schedule)
    return schedule


def schedule_pause(*, schedule: Schedule) -> bool:
    """Stop starting runs. Returns False if it was already paused."""
    paused = bool(Schedule.objects.filter(pk=schedule.pk, is_paused=False).update(is_paused=True))
    schedule.is_paused = True
    if paused:
        _log("schedule_paused", schedule)
    return paused


def schedule_resume(*, schedule: Schedule, at: datetime | None = None) -> bool:
    """Start running again from the next slot after now. Returns False if it was not paused."""
    at = at or _now()
    with transaction.atomic():
        locked = Schedule.objects.select_for_update().filter(pk=schedule.pk, is_paused=True).first()
        if locked is None:
            return False
        if (
            locked.kind == Schedule.Kind.ONCE
            and locked.last_slot_at is None
            and locked.run_at is not None
            and locked.run_at <= at
        ):
            SkippedSlot.objects.bulk_create(
                [
                    SkippedSlot(
                        schedule=locked, slot_at=locked.run_at, reason=PAUSED_AT_ITS_TIME, at=at
                    )
                ],
                ignore_conflicts=True,
            )
            locked.last_slot_at = locked.run_at
        locked.next_run_at = _first_slot(locked, at=at)
        locked.is_paused = False
        locked.save(update_fields=["is_paused", "next_run_at", "last_slot_at", "updated_at"])
    schedule.is_paused, schedule.next_run_at = False, locked.next_run_at
    schedule.last_slot_at = locked.last_slot_at
    _log("schedule_resumed", schedule)
    return True


def schedule_delete(*, schedule: Schedule) -> None:
    """Remove a schedule. Its past executions stay (they lose the link, keep their slot)."""
    _log("schedule_deleted", schedule)
    schedule.delete()


# --- Read side for the pages ---------------------------------------------------------------------


def describe(schedule: Schedule) -> str:
    """A schedule in words; a one-off's time in the active (the viewer's) time zone."""
    try:
        if schedule.kind == Schedule.Kind.CRON:
            return describe_cron(schedule.cron, schedule.timezone)
        if schedule.kind == Schedule.Kind.INTERVAL:
            return describe_interval(schedule.interval_seconds)
    except ValueError:
        return f"{schedule.get_kind_display().lower()} (cannot be read)"
    local = timezone.localtime(schedule.run_at)
    # The pages' date format ("30 Nov 2026, 09:00:00"), in the viewer's zone, named.
    return f"once, on {local.day} {local:%b %Y, %H:%M:%S} {local.tzinfo}"


def input_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


def schedule_next_runs(schedule: Schedule, *, at: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` run times (UTC) of an active schedule; none while paused."""
    if schedule.is_paused or schedule.next_run_at is None:
        return []
    try:
        timing = schedule_timing(schedule)
    except ValueError:
        return []
    return [schedule.next_run_at, *next_runs(timing, after=schedule.next_run_at, count=count - 1)]


def schedule_dst_notices(schedule: Schedule, *, at: datetime, days: int = 366) -> list[DstNotice]:
    """Clock changes in the coming year that skip or repeat some of a cron schedule's runs."""
    if schedule.kind != Schedule.Kind.CRON:
        return []
    try:
        return dst_notices(Cron.parse(schedule.cron), schedule.timezone, start=at, days=days)
    except ValueError:
        return []


def _now() -> datetime:
    return timezone.now()


def _log(action: str, schedule: Schedule) -> None:
    logger.info(
        action.replace("_", " "),
        extra={"action": action, "schedule": str(schedule.uuid), "agent": schedule.agent_id},
    )
