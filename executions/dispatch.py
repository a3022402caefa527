"""The dispatcher: one tick, every few seconds, that turns time into work.

Design notes
============

**One beat entry, our own table.** celery beat (with django-celery-beat's DatabaseScheduler)
fires a single periodic task, ``executions.dispatch`` (see ``dispatch_tasks.py``), every
``CONVEYOR_DISPATCH_INTERVAL`` seconds. The schedules themselves live in ``agents.Schedule``,
not in django-celery-beat's ``PeriodicTask`` table. Why:

* *Exactly once per slot.* A ``PeriodicTask`` per schedule would make beat the only guard
  against double runs: two beats (a deploy overlap, a second machine started by mistake) would
  each fire every slot. Here a tick *claims* due schedules in a transaction and creates the
  slot's execution with ``(schedule, scheduled_for)`` unique, so any number of beats, ticks or
  workers running the tick still start one execution per slot. A tick that loses the race gets
  an IntegrityError inside a savepoint and moves on.
* *Edits apply at once.* Beat keeps its own copy of the schedule and only rereads it when
  django-celery-beat notices a change; our services recompute ``Schedule.next_run_at`` on every
  change and the next tick reads it. Nothing is synchronised into beat's tables.
* *Time zones and DST* are ours (``agents.schedules``): a skipped local time runs once at the
  first valid instant, a repeated one once (first occurrence). Beat's crontab would follow its
  own rules.
* *Downtime is explicit.* A tick sees ``next_run_at`` far in the past and applies the
  schedule's catch-up policy (one run for the latest missed slot, or none) instead of beat's
  "run once now, whatever was missed" behaviour. Slots less than
  ``CONVEYOR_SCHEDULE_MISFIRE_GRACE`` seconds late are simply late and run one by one. (So a
  schedule more frequent than the grace always has an on-time slot after an outage: that one
  runs whatever the policy, and the slots missed before it are recorded as one. And a burst of
  more due slots than the dispatcher gets through within the grace makes the last ones "missed":
  size the grace, or the workers running ticks, for the biggest burst; see
  bench/schedules_scale.py.)
* *Cheap.* One indexed query per tick when nothing is due (``schedule_due`` partial index).

**Claiming.** In a transaction, due schedules (``next_run_at <= now``, not paused) are selected
``FOR UPDATE SKIP LOCKED`` on Postgres, so ticks running at once on several workers split the
work instead of queueing behind each other's locks. SQLite has no row locks, but Conveyor opens
its SQLite transactions ``IMMEDIATE``: a tick holds the write lock for the whole batch, so two
ticks are serialised and the second one sees the advanced ``next_run_at``. Batches are small on
SQLite so that workers claiming executions never wait long for that lock.

**The tick's own hygiene.** The task expires after one interval (a backlog of ticks behind a
busy worker is dropped, not replayed), runs on the maintenance queue, and stores no result.

The same tick also:

1. **Publishes due delayed runs.** An execution created with ``not_before`` in the future is
   written queued and not sent to the broker (a Celery ETA longer than the broker's visibility
   timeout would be redelivered, and a database row survives a broker restart). When it is due,
   a compare-and-set UPDATE stamps ``next_attempt_at`` (the "handed to the broker at" mark,
   which the claim clears) and the message is published on commit. Only one tick wins the
   UPDATE, so a run is never sent twice by two ticks.
2. **Holds and releases queued slots** (overlap policy ``queue``): such a slot's execution is
   created like a delayed run due right away, and released by (1) only when no earlier run of
   the agent is active. At most one run per schedule waits like this; further slots are
   recorded as skipped, so a schedule faster than its runs cannot pile up work forever.
3. **Re-publishes stranded executions** (``republish_stranded``): queued executions handed to
   the broker more than ``CONVEYOR_REPUBLISH_AFTER`` seconds ago and never claimed (the broker
   was down at commit, or lost the message), and ``retrying`` ones whose retry is that much
   overdue (the worker holding the retry's message died). The worker's claim checks status and
   attempt, so a duplicate message does nothing. The wait before each re-publish doubles with
   the time the execution has already waited, so a long but healthy backlog costs a handful of
   duplicates per execution, not one per minute.
4. **Reaps lost attempts** (``reap_lost_attempts``): an execution still ``running`` longer than
   its agent's timeout + ``CONVEYOR_TIME_LIMIT_GRACE`` (the hard kill) + ``CONVEYOR_REAPER_GRACE``
   since its current attempt started, with no heartbeat in the last ``CONVEYOR_REAPER_GRACE``
   seconds, lost its worker (a live worker would have killed and finished it). The attempt is
   closed as ``lost`` and the execution moves to ``retrying`` (next attempt enqueued) or, with
   no attempt left, to ``failed`` with category ``worker_lost``.

Every status change goes through ``executions.services.transition`` (compare-and-set), so all
of this is idempotent and safe to run on several machines at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Max,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from agents.models import Agent, Schedule, SkippedSlot
from agents.schedule_services import schedule_timing

from .errors import CATEGORIES, Category
from .humanize import seconds_in_words
from .models import Execution, ExecutionAttempt
from .services import ExecutionRefused, enqueue, execution_create, transition

logger = logging.getLogger("conveyor.dispatch")
Status = Execution.Status

# A held slot's execution is written as a delayed run due this long after it is created, so
# that execution_create does not publish it; the dispatcher releases it.
HOLD = timedelta(milliseconds=1)
# At most this many slots of one schedule are handled per tick (the rest wait for the next).
MAX_SLOTS_PER_TICK = 100
# Rows handled per pass and per tick.
PASS_LIMIT = 1000

MISSED = "missed while Conveyor was down"
AGENT_PAUSED = "the agent was paused"
ALREADY_WAITING = "a run of this schedule was already waiting for the active run to finish"


def _batch_size() -> int:
    # Postgres: big batches (SKIP LOCKED lets ticks share). SQLite: the tick holds the database
    # write lock for a batch, so keep it short.
    return 500 if connection.vendor == "postgresql" else 100


@dataclass
class TickReport:
    started: int = 0
    skipped: Counter = field(default_factory=Counter)
    published: int = 0
    republished: int = 0
    reaped: int = 0
    errors: int = 0
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(
            self.started
            or self.skipped
            or self.published
            or self.republished
            or self.reaped
            or self.errors
        )


def tick(*, at: datetime | None = None) -> TickReport:
    """Everything the dispatcher does every ``CONVEYOR_DISPATCH_INTERVAL`` seconds.

    Each pass runs even if an earlier one failed (a broken pass must not stop the others); the
    first error is raised again at the end so that the task is recorded as failed.
    """
    at = at or timezone.now()
    began = time.monotonic()
    report = TickReport()
    first_error = None
    passes = (
        ("schedules", lambda: dispatch_schedules(at=at, report=report)),
        ("delayed", lambda: setattr(report, "published", publish_due(at=at))),
        ("republish", lambda: setattr(report, "republished", republish_stranded(at=at))),
        ("reaper", lambda: setattr(report, "reaped", reap_lost_attempts(at=at))),
    )
    for name, run in passes:
        try:
            run()
        except Exception as exc:
            report.errors += 1
            first_error = first_error or exc
            logger.exception(
                "dispatcher pass failed", extra={"action": "dispatch_failed", "pass": name}
            )
    report.seconds = time.monotonic() - began
    if report:
        logger.info(
            "dispatcher tick",
            extra={
                "action": "dispatch_tick",
                "started": report.started,
                "skipped": sum(report.skipped.values()),
                "published": report.published,
                "republished": report.republished,
                "reaped": report.reaped,
                "seconds": round(report.seconds, 3),
            },
        )
    if first_error is not None:
        raise first_error
    return report


# --- Schedules ---------------------------------------------------------------------------------


def dispatch_schedules(
    *, at: datetime, report: TickReport | None = None, budget: float | None = None
) -> TickReport:
    """Start (or skip) every slot due at ``at``, in batches, each batch one transaction.

    ``budget``: stop taking new batches after this many seconds (the next tick continues).
    """
    report = report if report is not None else TickReport()
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
            advanced = []
            for schedule in schedules:
                try:
                    dispatch_schedule(schedule, at=at, report=report, busy=busy, save=False)
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
            # One UPDATE for the batch rather than one per schedule.
            Schedule.objects.bulk_update(advanced, ["next_run_at", "last_slot_at"])
        if len(schedules) < size or time.monotonic() > deadline:
            return report


def dispatch_schedule(
    schedule: Schedule,
    *,
    at: datetime,
    report: TickReport,
    busy: BusyAgents | None = None,
    save: bool = True,
) -> None:
    """Handle the due slots of one (locked) schedule and advance it (``save=False``: only on
    the instance, the caller saves; ``busy``: the batch's view of active runs).

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
    start = partial(_start_slot, schedule, at=at, report=report, busy=busy)
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
    report: TickReport,
    busy: BusyAgents,
    late: bool = False,
) -> Execution | None:
    """Create the slot's execution, or record why not. Nothing happens if the slot is taken."""
    agent: Agent = schedule.agent
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
            if _waiting_runs(schedule).exists():
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
        # work is rolled back, not the batch.
        with transaction.atomic():
            execution = execution_create(
                agent=agent,
                trigger=Execution.Trigger.SCHEDULE,
                input=schedule.input,
                schedule=schedule,
                scheduled_for=slot,
                not_before=at + HOLD if hold else None,
                reason=reason,
                at=at,
            )
    except IntegrityError:
        # Another tick (another beat, a duplicate message) started this slot first.
        return None
    except ExecutionRefused:
        _skip(schedule, slot, AGENT_PAUSED, at=at, report=report)
        return None
    busy.started(agent.pk)
    report.started += 1
    return execution


class BusyAgents:
    """Which agents have a run that a new slot would overlap, read in one query per batch and
    kept up to date as the batch starts runs (two schedules of one agent due together)."""

    def __init__(self, agent_ids, *, at: datetime):
        # Max: "running" > "retrying" > "queued", the most telling word for a skipped slot.
        rows = (
            _busy_runs(at=at)
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


# "Handed to a worker": running or retrying, or queued and published (a first message sent at
# creation, or stamped by the dispatcher through next_attempt_at).
_HANDED_OVER = (
    Q(status__in=[Status.RUNNING, Status.RETRYING])
    | Q(next_attempt_at__isnull=False)
    | Q(not_before__isnull=True)
    | Q(not_before__lte=F("created_at"))
)


def _busy_runs(*, at: datetime):
    """Runs that a new slot overlaps: handed over, or due and waiting their turn.

    A delayed run whose time has not come yet does not count.
    """
    return Execution.objects.filter(status__in=Execution.ACTIVE_STATUSES).filter(
        _HANDED_OVER | Q(not_before__lte=at)
    )


def _waiting_runs(schedule: Schedule):
    """This schedule's executions held back by the ``queue`` overlap policy."""
    return Execution.objects.filter(
        schedule=schedule,
        status=Status.QUEUED,
        next_attempt_at__isnull=True,
        not_before__gt=F("created_at"),
    )


# --- Delayed and held executions -----------------------------------------------------------------


def publish_due(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Hand due delayed executions (and held slots whose turn has come) to the broker."""
    waiting = Execution.objects.filter(
        status=Status.QUEUED,
        next_attempt_at__isnull=True,
        not_before__lte=at,
        not_before__gt=F("created_at"),
    ).select_related("agent")
    published = 0
    # Delayed runs (never from a schedule), oldest due first.
    for execution in waiting.filter(schedule__isnull=True).order_by("not_before", "pk")[:limit]:
        published += _publish(execution, at=at)
    # Held slots: per agent, only the oldest can be next.
    seen: set[int] = set()
    for execution in waiting.filter(schedule__isnull=False).order_by("pk")[:limit]:
        if execution.agent_id in seen:
            continue
        seen.add(execution.agent_id)
        if (
            execution.agent.overlap_policy == Agent.Overlap.QUEUE
            and (
                _busy_runs(at=at)
                .filter(agent_id=execution.agent_id)
                .exclude(pk=execution.pk)
                .filter(_HANDED_OVER | Q(pk__lt=execution.pk))
            ).exists()
        ):
            continue
        published += _publish(execution, at=at)
    return published


def _publish(execution: Execution, *, at: datetime) -> int:
    """Stamp a queued execution as handed over (compare-and-set) and publish it on commit."""
    with transaction.atomic():
        won = Execution.objects.filter(
            pk=execution.pk,
            status=Status.QUEUED,
            attempt=execution.attempt,
            next_attempt_at__isnull=True,
        ).update(next_attempt_at=at)
        if won:
            _enqueue_on_commit(execution)
    if won:
        logger.info(
            "delayed execution handed to the broker",
            extra={"action": "execution_published", "execution_id": str(execution.uuid)},
        )
    return won


def _enqueue_on_commit(execution: Execution, *, countdown: float | None = None) -> None:
    execution_id, agent, attempt = execution.pk, execution.agent, execution.attempt
    task_id = execution.celery_task_id

    # A plain function, not functools.partial: Django names the callback (``__qualname__``)
    # when it logs a robust callback's failure.
    def publish() -> None:
        enqueue(execution_id, agent, attempt=attempt, task_id=task_id, countdown=countdown)

    # robust: a broker that is down must not undo the stamp; the republish pass sends it later.
    transaction.on_commit(publish, robust=True)


# --- Stranded executions -----------------------------------------------------------------------


def republish_stranded(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Publish again what was handed to the broker but never claimed.

    * queued: last handed over (``next_attempt_at``, else ``created_at``) at least
      ``CONVEYOR_REPUBLISH_AFTER`` seconds ago, and at least as long ago as it had already waited
      then (so the waits double: 60 s, 2 min, 4 min... of a backlog cost a few duplicates);
    * retrying: the retry was due at least ``CONVEYOR_REPUBLISH_AFTER`` seconds ago.
    """
    grace = timedelta(seconds=settings.CONVEYOR_REPUBLISH_AFTER)
    cutoff = at - grace
    queued = (
        Execution.objects.filter(status=Status.QUEUED)
        .filter(
            Q(next_attempt_at__isnull=False)
            | Q(not_before__isnull=True)
            | Q(not_before__lte=F("created_at"))
        )
        .annotate(
            sent_at=Coalesce("next_attempt_at", "created_at"),
            first_due=Greatest("created_at", Coalesce("not_before", "created_at")),
        )
        .annotate(
            waited=ExpressionWrapper(F("sent_at") - F("first_due"), output_field=DurationField()),
            since_sent=ExpressionWrapper(
                Value(at, output_field=DateTimeField()) - F("sent_at"),
                output_field=DurationField(),
            ),
        )
        .filter(sent_at__lte=cutoff, waited__lte=F("since_sent"))
    )
    retrying = Execution.objects.filter(status=Status.RETRYING, next_attempt_at__lte=cutoff)
    republished = 0
    for source in (queued, retrying):
        for execution in source.select_related("agent").order_by("pk")[:limit]:
            with transaction.atomic():
                won = Execution.objects.filter(
                    pk=execution.pk,
                    status=execution.status,
                    attempt=execution.attempt,
                    next_attempt_at=execution.next_attempt_at,
                ).update(next_attempt_at=at)
                if won:
                    _enqueue_on_commit(execution)
            if won:
                republished += 1
                logger.warning(
                    "stranded execution published again",
                    extra={
                        "action": "execution_republished",
                        "execution_id": str(execution.uuid),
                        "status": execution.status,
                        "attempt": execution.attempt,
                    },
                )
    return republished


# --- Lost attempts ------------------------------------------------------------------------------


def reap_lost_attempts(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Finish the attempts whose worker died: retry them, or fail them as ``worker_lost``."""
    grace = settings.CONVEYOR_TIME_LIMIT_GRACE + settings.CONVEYOR_REAPER_GRACE
    silent_since = at - timedelta(seconds=settings.CONVEYOR_REAPER_GRACE)
    current_attempt = ExecutionAttempt.objects.filter(
        execution=OuterRef("pk"), number=OuterRef("attempt")
    ).values("started_at")[:1]
    candidates = (
        Execution.objects.filter(status=Status.RUNNING)
        .filter(Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lte=silent_since))
        .annotate(attempt_started_at=Subquery(current_attempt))
        # The shortest possible limit (a 1 s timeout); the agent's own is checked below.
        .filter(attempt_started_at__lte=at - timedelta(seconds=1 + grace))
        .select_related("agent")
        .order_by("pk")[:limit]
    )
    reaped = 0
    for execution in candidates:
        limit_s = execution.agent.timeout + grace
        if execution.attempt_started_at > at - timedelta(seconds=limit_s):
            continue
        reaped += reap(execution, at=at, silent_for=limit_s)
    return reaped


def reap(execution: Execution, *, at: datetime, silent_for: float) -> bool:
    """Close a running execution's lost attempt and retry or fail it. Returns whether it won."""
    agent = execution.agent
    policy = agent.retry_policy
    number = execution.attempt
    info = CATEGORIES[Category.WORKER_LOST]
    retry = (
        policy.retries(category=Category.WORKER_LOST, retryable=info.retryable)
        and number < execution.max_attempts
    )
    lost = (
        f"The worker running attempt {number} stopped before the attempt finished (it was "
        f"killed, or its machine restarted)."
    )
    detail = (
        f"Attempt {number} was still marked running {seconds_in_words(silent_for)} after it "
        f"started, past the agent's time limit of {agent.timeout} s and the worker's hard kill; "
        f"its worker is presumed lost."
    )
    common = {
        "error_category": Category.WORKER_LOST,
        "error_title": info.title,
        "error_detail": detail,
        "heartbeat_at": None,
    }
    countdown = None
    with transaction.atomic():
        if retry:
            countdown = policy.countdown(attempt=number)
            won = transition(
                execution,
                to=Status.RETRYING,
                at=at,
                reason=f"Attempt {number} lost with its worker; retry in {countdown} s",
                event_data={"countdown": countdown, "category": Category.WORKER_LOST},
                next_attempt_at=at + timedelta(seconds=countdown),
                error_message=(
                    f"{lost} Conveyor will try again in {seconds_in_words(countdown)} "
                    f"(attempt {number + 1} of {execution.max_attempts})."
                ),
                **common,
            )
        else:
            if Category.WORKER_LOST not in policy.retry_on:
                why = "Conveyor does not retry this kind of error for this agent."
            else:
                why = f"No attempts are left ({number} of {execution.max_attempts} used)."
            won = transition(
                execution,
                to=Status.FAILED,
                at=at,
                reason=f"Attempt {number} lost with its worker; {why}",
                event_data={"category": Category.WORKER_LOST},
                finished_at=at,
                duration=at - execution.started_at if execution.started_at else None,
                next_attempt_at=None,
                error_message=f"{lost} {why} {info.what_to_do}",
                **common,
            )
        if won:
            ExecutionAttempt.objects.filter(
                execution_id=execution.pk, number=number, finished_at__isnull=True
            ).update(
                finished_at=at,
                outcome=ExecutionAttempt.Outcome.LOST,
                error_category=Category.WORKER_LOST,
                error_message=lost,
                retry_delay=countdown,
            )
            if retry:
                _enqueue_on_commit(execution, countdown=countdown)
    if won:
        logger.warning(
            "lost attempt reaped",
            extra={
                "action": "execution_reaped",
                "execution_id": str(execution.uuid),
                "attempt": number,
                "retry": retry,
            },
        )
    return won
