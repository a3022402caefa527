"""Schedules' slot dispatch: turn due slots into executions, exactly once per slot.

The dispatcher's tick (``executions.dispatch.tick``, sent by celery beat every
``CONVEYOR_DISPATCH_INTERVAL`` seconds) calls :func:`dispatch_schedules` first, then the
executions' recovery passes (``executions.recovery``).

* *Exactly once per slot.* The schedules live in ``agents.Schedule``, not in
  django-celery-beat's ``PeriodicTask`` table, so beat is not the only guard against double
  runs: a tick *claims* due schedules in a transaction and creates the slot's execution with
  ``(schedule, scheduled_for)`` unique, so any number of beats, ticks or workers running the
  tick still start one execution per slot. A tick that loses the race gets an IntegrityError
  inside a savepoint and moves on. (On Postgres a batch's runs are written together, in one
  statement, after its schedules are read: ``executions_insert`` leaves out a slot taken
  meanwhile, ON CONFLICT DO NOTHING, and its schedules are advanced in one UPDATE;
  tests/agents/test_schedule_dispatch_twin.py holds the two paths to the same rows.)
* *Edits apply at once.* The schedule services recompute ``Schedule.next_run_at`` on every
  change and the next tick reads it. Nothing is synchronised into beat's tables.
* *Time zones and DST* are ours (``agents.schedules``): a skipped local time runs once at the
  first valid instant, a repeated one once (first occurrence).
* *Downtime is explicit.* A tick sees ``next_run_at`` far in the past and applies the
  schedule's catch-up policy (one run for the latest missed slot, or none). Slots less than
  ``CONVEYOR_SCHEDULE_MISFIRE_GRACE`` seconds late are simply late and run one by one. (So a
  schedule more frequent than the grace always has an on-time slot after an outage: that one
  runs whatever the policy, and the slots missed before it are recorded as one. And a burst of
  more due slots than the dispatcher gets through within the grace makes the last ones
  "missed": size the grace, or the workers running ticks, for the biggest burst; see
  bench/schedules_scale.py.)
* *Overlap.* A slot that comes while a run of the agent is in the way
  (``executions.selectors.runs_in_the_way``: any active run but a delayed one whose time has not
  come) is skipped (policy ``skip``), started anyway (``allow``) or started *held* (``queue``:
  the execution waits with reason ``held``, and the recovery pass releases it when the earlier
  run ends). At most one run per schedule is held; further slots are recorded as skipped.
* *Cheap.* One indexed query per tick when nothing is due (``schedule_due`` partial index).

**Claiming.** In a transaction, due schedules (``next_run_at <= now``, not paused) are selected
``FOR UPDATE SKIP LOCKED`` on Postgres, so ticks running at once on several workers split the
work instead of queueing behind each other's locks. SQLite has no row locks, but Conveyor opens
its SQLite transactions ``IMMEDIATE``: a tick holds the write lock for the whole batch, so two
ticks are serialised and the second one sees the advanced ``next_run_at``. Batches are small on
SQLite so that workers claiming executions never wait long for that lock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Max

from executions import fastpath
from executions.models import Execution
from executions.selectors import held_runs, runs_in_the_way
from executions.services import (
    ExecutionRefused,
    execution_request,
    executions_insert,
    publish_many_on_commit,
)

from .kinds.base import InvalidInputError
from .models import Agent, Schedule, SkippedSlot
from .schedule_services import schedule_timing

logger = logging.getLogger("conveyor.schedules")
Status = Execution.Status

# At most this many slots of one schedule are handled per tick (the rest wait for the next).
MAX_SLOTS_PER_TICK = 100

MISSED = "missed while Conveyor was down"
AGENT_PAUSED = "the agent was paused"
ALREADY_WAITING = "a run of this schedule was already waiting for the active run to finish"


def _batch_size() -> int:
    # Postgres: big batches (SKIP LOCKED lets ticks share). SQLite: the tick holds the database
    # write lock for a batch, so keep it short.
    return 1000 if connection.vendor == "postgresql" else 100


@dataclass
class SlotReport:
    started: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: int = 0


def dispatch_schedules(
    *, at: datetime, report: SlotReport | None = None, budget: float | None = None
) -> SlotReport:
    """Start (or skip) every slot due at ``at``, in batches, each batch one transaction.

    ``budget``: stop taking new batches after this many seconds (the next tick continues).
    """
    report = report if report is not None else SlotReport()
    budget = budget if budget is not None else max(10.0, settings.CONVEYOR_DISPATCH_INTERVAL * 5)
    deadline = time.monotonic() + budget
    size = _batch_size()
    broken: set[int] = set()
    while True:
        with transaction.atomic():
            due = (
                Schedule.objects.filter(is_paused=False, next_run_at__lte=at)
                .exclude(pk__in=broken)
                .select_related("agent")
                .order_by("next_run_at", "pk")
            )
            if connection.features.has_select_for_update_skip_locked:
                due = due.select_for_update(skip_locked=True, of=("self",))
            schedules = list(due[:size])
            busy = BusyAgents({schedule.agent_id for schedule in schedules}, at=at)
            advanced, to_publish = [], []
            # Postgres: the batch's runs are written together after the loop (below).
            pending = [] if fastpath.enabled() else None
            for schedule in schedules:
                try:
                    dispatch_schedule(
                        schedule,
                        at=at,
                        report=report,
                        busy=busy,
                        save=False,
                        to_publish=to_publish,
                        pending=pending,
                    )
                except DatabaseError:
                    raise  # the transaction is unusable: this tick fails, the next one retries
                except Exception:
                    # A schedule that cannot be read (say, a time zone removed from the system)
                    # must not hold up the others; it is logged on every tick until fixed. Its
                    # slot, if already started, is protected by the unique constraint.
                    broken.add(schedule.pk)
                    report.errors += 1
                    logger.exception(
                        "schedule could not be dispatched",
                        extra={
                            "action": "schedule_dispatch_failed",
                            "schedule": str(schedule.uuid),
                        },
                    )
                else:
                    advanced.append(schedule)
            if pending is not None:
                # One statement for the batch's runs; a slot another tick started meanwhile is
                # left out, as its own insert would have failed.
                report.started += len(executions_insert(pending, to_publish=to_publish))
            # One UPDATE for the batch rather than one per schedule; the batch's runs are
            # published together once it commits (one pipelined round trip).
            if fastpath.enabled():
                fastpath.update_many(advanced, ["next_run_at", "last_slot_at"])
            else:
                Schedule.objects.bulk_update(advanced, ["next_run_at", "last_slot_at"])
            publish_many_on_commit(to_publish)
        if len(schedules) < size or time.monotonic() > deadline:
            return report


def dispatch_schedule(
    schedule: Schedule,
    *,
    at: datetime,
    report: SlotReport,
    busy: BusyAgents | None = None,
    save: bool = True,
    to_publish: list | None = None,
    pending: list | None = None,
) -> None:
    """Handle the due slots of one (locked) schedule and advance it (``save=False``: only on
    the instance, the caller saves; ``busy``: the batch's view of active runs; ``to_publish``:
    the runs started are appended there for the caller to publish, see ``execution_request``;
    ``pending``: the runs are appended there for the caller to write, ``insert_later``).

    1. A slot at most ``CONVEYOR_SCHEDULE_MISFIRE_GRACE`` seconds late is started (subject to
       the agent's overlap policy), then the next one is looked at.
    2. An older slot was missed. If a later slot is still within the grace, the missed ones are
       recorded as one SkippedSlot (the latest of them) and that later slot is handled as in 1.
    3. Otherwise every due slot was missed: with ``catch_up=latest`` the latest one runs now
       (the earlier ones recorded as one SkippedSlot); with ``catch_up=none`` the latest is
       recorded as skipped, standing for all of them.
    4. ``next_run_at`` becomes the first slot after ``at`` (None when a one-off is done) and
       ``last_slot_at`` the last slot handled.
    """
    timing = schedule_timing(schedule)
    if busy is None:
        busy = BusyAgents({schedule.agent_id}, at=at)
    start = partial(
        _start_slot,
        schedule,
        at=at,
        report=report,
        busy=busy,
        to_publish=to_publish,
        pending=pending,
    )
    grace = timedelta(seconds=settings.CONVEYOR_SCHEDULE_MISFIRE_GRACE)
    cutoff = at - grace
    tiny = timedelta(microseconds=1)
    slot = schedule.next_run_at
    last = schedule.last_slot_at
    for _ in range(MAX_SLOTS_PER_TICK):
        if slot is None or slot > at:
            break
        if slot >= cutoff:
            start(slot)
            last, slot = slot, timing.next_after(slot)
            continue
        on_time = timing.next_after(cutoff - tiny)
        if on_time is not None and on_time <= at:
            missed = timing.latest(cutoff - tiny, since=slot) or slot
            _skip(schedule, missed, _missed_reason(earlier=missed > slot), at=at, report=report)
            last, slot = missed, on_time
            continue
        latest = timing.latest(at, since=slot) or slot
        if schedule.catch_up == Schedule.CatchUp.LATEST:
            if latest > slot:
                dropped = timing.latest(latest - tiny, since=slot) or slot
                _skip(
                    schedule, dropped, _missed_reason(earlier=dropped > slot), at=at, report=report
                )
            start(latest, late=True)
        else:
            _skip(schedule, latest, _missed_reason(earlier=latest > slot), at=at, report=report)
        last, slot = latest, timing.next_after(latest)
    schedule.next_run_at, schedule.last_slot_at = slot, last
    if save:
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=slot, last_slot_at=last)


def _missed_reason(*, earlier: bool) -> str:
    return MISSED + (" (and the slots before it)" if earlier else "")


def _start_slot(
    schedule: Schedule,
    slot: datetime,
    *,
    at: datetime,
    report: SlotReport,
    busy: BusyAgents,
    late: bool = False,
    to_publish: list | None = None,
    pending: list | None = None,
) -> Execution | None:
    """Create the slot's execution, or record why not. Nothing happens if the slot is taken."""
    agent: Agent = schedule.agent
    # execution_request refuses a paused agent (below); asking first only makes "paused" the
    # reason recorded for its slots, rather than an overlap with a run still going.
    if agent.is_paused:
        if not _taken(schedule, slot):
            _skip(schedule, slot, AGENT_PAUSED, at=at, report=report)
        return None
    hold = False
    if agent.overlap_policy != Agent.Overlap.ALLOW:
        active = busy.status_of(agent.pk)
        if active:
            if _taken(schedule, slot):
                return None
            if agent.overlap_policy == Agent.Overlap.SKIP:
                word = "waiting" if active == Status.QUEUED else active
                _skip(schedule, slot, f"the previous run was still {word}", at=at, report=report)
                return None
            if held_runs(schedule=schedule).exists():
                _skip(schedule, slot, ALREADY_WAITING, at=at, report=report)
                return None
            hold = True
    reason = f"Scheduled run for {slot.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" + (
        " (caught up after missed slots)" if late else ""
    )
    if hold:
        reason += "; waits for the agent's active run to finish"
    try:
        # A savepoint of our own: if the slot is taken the insert fails, and only this slot's
        # work is rolled back, not the batch. (Pending runs are written by the caller, where a
        # taken slot is left out instead.)
        with transaction.atomic() if pending is None else nullcontext():
            execution = execution_request(
                agent=agent,
                trigger=Execution.Trigger.SCHEDULE,
                input=schedule.input,
                schedule=schedule,
                scheduled_for=slot,
                hold=hold,
                reason=reason,
                at=at,
                to_publish=to_publish,
                insert_later=pending,
            )
    except IntegrityError:
        # Another tick (another beat, a duplicate message) started this slot first.
        return None
    except InvalidInputError as exc:
        # The agent's settings changed since the schedule's input was checked.
        _skip(schedule, slot, f"the agent refused the input: {exc.message}", at=at, report=report)
        return None
    except ExecutionRefused as exc:
        why = AGENT_PAUSED if exc.code == "agent_paused" else exc.message
        _skip(schedule, slot, why, at=at, report=report)
        return None
    busy.started(agent.pk)  # also when only pending: if its slot is taken, by a run as busy
    if execution.pk is not None:  # written (not left to the caller: ``pending``)
        report.started += 1
    return execution


class BusyAgents:
    """Which agents have a run that a new slot would overlap, read in one query per batch and
    kept up to date as the batch starts runs (two schedules of one agent due together)."""

    def __init__(self, agent_ids, *, at: datetime):
        # Max: "running" > "retrying" > "queued", the most telling word for a skipped slot.
        rows = (
            runs_in_the_way(at=at)
            .filter(agent_id__in=list(agent_ids))
            .values("agent_id")
            .annotate(busiest=Max("status"))
            .values_list("agent_id", "busiest")
        )
        self._status = dict(rows)

    def status_of(self, agent_id: int) -> str | None:
        return self._status.get(agent_id)

    def started(self, agent_id: int) -> None:
        self._status.setdefault(agent_id, Status.QUEUED)


def _taken(schedule: Schedule, slot: datetime) -> bool:
    """Whether the slot already has its execution (another tick, another beat, a duplicate
    message handled it). Creating it again is harmless (the unique constraint refuses it); this
    check only keeps such a tick from recording the slot as skipped too."""
    return Execution.objects.filter(schedule=schedule, scheduled_for=slot).exists()


def _skip(schedule: Schedule, slot: datetime, reason: str, *, at: datetime, report) -> None:
    # ignore_conflicts: a slot already recorded (by a tick that won a race) stays as it is.
    SkippedSlot.objects.bulk_create(
        [SkippedSlot(schedule=schedule, slot_at=slot, reason=reason, at=at)],
        ignore_conflicts=True,
    )
    report.skipped[reason] += 1
    logger.info(
        "scheduled slot skipped",
        extra={
            "action": "schedule_slot_skipped",
            "schedule": str(schedule.uuid),
            "slot": slot.isoformat(),
            "reason": reason,
        },
    )
