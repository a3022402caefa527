"""The backlog: what waits for a worker in each queue, how old the oldest of it is, how fast the
queue finishes runs, and how long it takes to drain at that rate.

What waits
----------
A run is *in the backlog* of its agent's queue when it could start now and no worker has
started it (:func:`waiting_for_a_worker`):

* queued and handed to the broker (``broker``) or waiting for a free slot of a concurrency
  limit (``slot``);
* retrying, with its retry due (``backoff`` until a time now past) or waiting for a slot.

Runs that wait for something other than a worker are not: delayed until a later start time,
held by their schedule's overlap policy, retrying later, waiting for a rate limit, a circuit
breaker or a paused agent. Running flows (waiting for their steps) are not running on a worker.

A run waits *since* it could start (:func:`ready_since`): its creation, or its delayed start time
when it asked for one; a retry since its retry was due. The same time starts its *start
latency* (:func:`start_latency`): from then to its first attempt's start, so it counts the
broker, the workers being busy and the limits, not a delay someone asked for.

Time to drain
-------------
:func:`drain_estimate` is the one rule, which the dashboard and /metrics both show: the backlog
divided by the queue's completion rate, the runs of the queue that finished (succeeded, failed
or cancelled) per second, taken as the *slower* of two windows up to now: the last
:data:`RECENT_WINDOW` (2 minutes) and the last :data:`RATE_WINDOW` (10 minutes). The long window
alone let an earlier burst of quick runs hide a stall (1,000 quick runs, then long runs filling
every slot: "about 16 seconds" while nothing could finish for 5 minutes); the short one alone
would swing with every run. The estimate says which rate it used, and both.

"Empty" when nothing waits; "not draining" when runs wait and none finished in the last 2
minutes (lately) or 10 minutes, with the number of runs running, since a queue of long runs
finishes nothing for a while and still drains. It assumes the rate holds and that nothing new
arrives: an estimate, which the dashboard says with its rates.

Over time
---------
The beat entry ``conveyor-queue-samples`` writes a :class:`~ops.models.QueueSample` per queue
every minute (:func:`sample`), kept :data:`SAMPLES_KEPT` (8 days, longer than the dashboard's
longest window). Start latencies of past hours are in the rollups (``Rollup.latencies``, a
histogram like the durations'), the current hour's from the rows (ops.rollups.split).

Cost: :func:`queue_backlog` is two queries whatever the size of the table: the active runs by
queue (the partial index ``execution_active``: its cost follows the backlog) and the runs
finished in the last 10 minutes by queue, with those of the last 2 minutes counted apart (the
index ``execution_finished``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Case, Count, DateTimeField, F, Max, Min, Q, QuerySet, When
from django.db.models.functions import Coalesce

from executions.models import Execution

from .models import QueueSample

logger = logging.getLogger("conveyor.ops")

Status, WaitReason = Execution.Status, Execution.WaitReason

#: The completion rate is the slower of the runs finished in these two spans up to now.
RATE_WINDOW = timedelta(minutes=10)
RECENT_WINDOW = timedelta(minutes=2)
#: Queue samples older than this are deleted as new ones are written.
SAMPLES_KEPT = timedelta(days=8)


# --- Rules --------------------------------------------------------------------------------------


def waiting_for_a_worker(now: datetime) -> Q:
    """The runs in the backlog at ``now`` (see the module docstring): only active statuses and
    wait reasons, for the partial index ``execution_active`` (status, wait_reason, wait_until)."""
    return (
        Q(status=Status.QUEUED, wait_reason__in=(WaitReason.BROKER, WaitReason.SLOT))
        | Q(status=Status.RETRYING, wait_reason=WaitReason.SLOT)
        | Q(status=Status.RETRYING, wait_reason=WaitReason.BACKOFF, wait_until__lte=now)
    )


def ready_at():
    """When a run could first start: its delayed start time if it asked for a later one than its
    creation, else its creation (SQL, both databases)."""
    return Case(
        When(not_before__gt=F("created_at"), then=F("not_before")),
        default=F("created_at"),
        output_field=DateTimeField(),
    )


def ready_since():
    """Since when a run of the backlog waits: a retry since it was due, any other run since it
    could first start (:func:`ready_at`)."""
    return Case(
        When(status=Status.RETRYING, then=Coalesce("next_attempt_at", "created_at")),
        default=ready_at(),
        output_field=DateTimeField(),
    )


def start_latency(
    *, created_at: datetime, not_before: datetime | None, started_at: datetime
) -> float:
    """Seconds from when a run could first start (:func:`ready_at`) to its first attempt's
    start (never below 0). ops.rollups writes the same in SQL on Postgres."""
    ready = not_before if not_before is not None and not_before > created_at else created_at
    return max(0.0, (started_at - ready).total_seconds())


@dataclass(frozen=True)
class Drain:
    """How long a backlog takes to drain at the slower of two completion rates
    (:func:`drain_estimate`)."""

    backlog: int
    #: Runs finished over ``window`` (10 minutes) and over ``recent_window`` (2 minutes).
    finished: int
    window: timedelta
    recent_finished: int = 0
    recent_window: timedelta = RECENT_WINDOW
    #: Runs running on a worker now (said when not draining).
    running: int = 0
    #: Seconds to drain; None when empty or not draining.
    seconds: float | None = None

    @property
    def state(self) -> str:
        """``empty`` (nothing waits), ``not_draining`` (runs wait, none finished lately) or
        ``draining``."""
        if not self.backlog:
            return "empty"
        return "draining" if self.seconds is not None else "not_draining"

    @property
    def long_per_minute(self) -> float:
        return self.finished * 60 / self.window.total_seconds()

    @property
    def recent_per_minute(self) -> float:
        return self.recent_finished * 60 / self.recent_window.total_seconds()

    @property
    def recent_is_slower(self) -> bool:
        """Whether the estimate uses the recent window's rate (the slower; on a tie, the long
        window's, the steadier)."""
        return self.recent_per_minute < self.long_per_minute

    @property
    def rate_window(self) -> timedelta:
        """The window whose rate the estimate uses."""
        return self.recent_window if self.recent_is_slower else self.window

    @property
    def per_minute(self) -> float:
        """The rate the estimate uses: the slower of the two windows'."""
        return min(self.recent_per_minute, self.long_per_minute)

    def __str__(self) -> str:
        """What the dashboard says, e.g. "about 2.3 minutes at the rate of the last 2 minutes (6
        runs/min; 13 runs/min over the last 10 minutes)"."""
        if self.state == "empty":
            return "empty: nothing waits"
        running = f"{self.running} running"
        if self.state == "not_draining":
            if self.finished <= 0:
                return f"not draining: no run finished in the last {_span(self.window)} ({running})"
            return (
                f"not draining lately: no run finished in the last {_span(self.recent_window)} "
                f"({running})"
            )
        used, other = (
            (self.recent_window, self.window)
            if self.recent_is_slower
            else (self.window, self.recent_window)
        )
        other_rate = self.long_per_minute if self.recent_is_slower else self.recent_per_minute
        return (
            f"about {_span(timedelta(seconds=self.seconds))} at the rate of the last "
            f"{_span(used)} ({_number(self.per_minute)} runs/min; {_number(other_rate)} runs/min "
            f"over the last {_span(other)})"
        )


def drain_estimate(
    *,
    backlog: int,
    finished: int,
    window: timedelta = RATE_WINDOW,
    recent_finished: int,
    recent_window: timedelta = RECENT_WINDOW,
    running: int = 0,
) -> Drain:
    """The time to drain ``backlog`` runs: backlog / rate, the rate being the slower of
    ``finished`` runs per ``window`` and ``recent_finished`` runs per ``recent_window`` (cut to
    ``window`` when longer). Not draining when runs wait and none finished in the recent window
    (``running``: the runs running, which it says). The one rule the dashboard and /metrics
    show."""
    recent_window = min(recent_window, window)
    drain = Drain(backlog, finished, window, recent_finished, recent_window, running)
    if backlog <= 0 or finished <= 0 or recent_finished <= 0:
        return drain
    seconds = backlog * 60 / drain.per_minute
    return Drain(backlog, finished, window, recent_finished, recent_window, running, seconds)


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")


def _span(span: timedelta) -> str:
    """A span in words, rounded to what a reader needs: "40 seconds", "12 minutes", "3.5 hours",
    "2 days"."""
    seconds = span.total_seconds()
    for unit, size, cap in (
        ("second", 1, 90),
        ("minute", 60, 90 * 60),
        ("hour", 3600, 48 * 3600),
        ("day", 86400, None),
    ):
        if cap is None or seconds < cap:
            value = seconds / size
            text = f"{value:.0f}" if value >= 10 or unit == "second" else _number(value)
            return f"{text} {unit}{'' if text == '1' else 's'}"
    raise AssertionError("unreachable")


# --- Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueBacklog:
    queue: str
    #: Runs in the backlog (waiting for a worker or a slot).
    queued: int
    #: Seconds the oldest of them has waited; None: none waits.
    oldest_age: float | None
    #: Runs running on a worker.
    running: int
    drain: Drain


def execution_queues(names: list[str] | None = None) -> list[str]:
    """The queues agents' runs go to: ``names`` (default ops.selectors.queue_names, one query)
    without the maintenance and notifications queues (no execution waits there)."""
    if names is None:
        from .selectors import queue_names

        names = queue_names()
    own = {settings.CONVEYOR_MAINTENANCE_QUEUE, settings.CONVEYOR_NOTIFICATIONS_QUEUE}
    return [q for q in names if q not in own]


def _active_by_queue(now: datetime) -> QuerySet:
    backlog = waiting_for_a_worker(now)
    on_worker = Q(status=Status.RUNNING, wait_reason=WaitReason.NONE)
    return (
        Execution.objects.filter(backlog | on_worker)
        .values("agent__queue")
        .annotate(
            queued=Count("status", filter=backlog),
            oldest=Min(ready_since(), filter=backlog),
            running=Count("status", filter=on_worker),
        )
        .order_by()
    )


def queue_backlog(
    *,
    now: datetime,
    queues: list[str] | None = None,
    window: timedelta = RATE_WINDOW,
    recent_window: timedelta = RECENT_WINDOW,
) -> list[QueueBacklog]:
    """Every queue's backlog, oldest waiting run, runs running and time to drain at ``now`` (at
    the slower of the rates of the runs finished over ``window`` and ``recent_window``), in the
    order of ``queues`` (default :func:`execution_queues`; a queue with runs but not named comes
    after them). Two queries (see the module docstring)."""
    queues = list(queues if queues is not None else execution_queues())
    recent_window = min(recent_window, window)
    active = {row["agent__queue"]: row for row in _active_by_queue(now)}
    finished = {
        row["agent__queue"]: row
        for row in Execution.objects.filter(finished_at__gt=now - window, finished_at__lte=now)
        .values("agent__queue")
        .annotate(
            n=Count("status"),
            recent=Count("status", filter=Q(finished_at__gt=now - recent_window)),
        )
        .order_by()
    }
    queues += sorted(q for q in active if q not in queues)
    found = []
    for queue in queues:
        row, done = active.get(queue, {}), finished.get(queue, {})
        queued, oldest, running = row.get("queued", 0), row.get("oldest"), row.get("running", 0)
        found.append(
            QueueBacklog(
                queue=queue,
                queued=queued,
                oldest_age=max(0.0, (now - oldest).total_seconds()) if queued else None,
                running=running,
                drain=drain_estimate(
                    backlog=queued,
                    finished=done.get("n", 0),
                    window=window,
                    recent_finished=done.get("recent", 0),
                    recent_window=recent_window,
                    running=running,
                ),
            )
        )
    return found


def total(rows: list[QueueBacklog]) -> QueueBacklog:
    """Every queue's backlog together, drained at every queue's rates together."""
    queued = sum(r.queued for r in rows)
    running = sum(r.running for r in rows)
    ages = [r.oldest_age for r in rows if r.oldest_age is not None]
    return QueueBacklog(
        queue="",
        queued=queued,
        oldest_age=max(ages) if ages else None,
        running=running,
        drain=drain_estimate(
            backlog=queued,
            finished=sum(r.drain.finished for r in rows),
            window=rows[0].drain.window if rows else RATE_WINDOW,
            recent_finished=sum(r.drain.recent_finished for r in rows),
            recent_window=rows[0].drain.recent_window if rows else RECENT_WINDOW,
            running=running,
        ),
    )


# --- Samples ------------------------------------------------------------------------------------


def floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def sample(*, now: datetime) -> int:
    """Write this minute's :class:`QueueSample` of every queue (a second call in the same minute
    changes nothing) and delete those older than :data:`SAMPLES_KEPT`. The broker's list
    lengths are recorded when it answers. Returns the number of samples written."""
    from . import system

    at = floor_minute(now)
    rows = queue_backlog(now=now)
    depths = system.queue_depths([r.queue for r in rows])
    written = QueueSample.objects.bulk_create(
        [
            QueueSample(
                at=at,
                queue=r.queue,
                queued=r.queued,
                oldest_age=r.oldest_age,
                running=r.running,
                broker=None if depths.error else depths.depths.get(r.queue),
            )
            for r in rows
        ],
        ignore_conflicts=True,
    )
    deleted, _ = QueueSample.objects.filter(at__lt=at - SAMPLES_KEPT).delete()
    logger.debug(
        "queues sampled",
        extra={"action": "ops_queues_sampled", "queues": len(written), "deleted": deleted},
    )
    return len(written)


@dataclass
class SampleSeries:
    """A queue's samples over a window, one point per bar of the window (the most queued and
    the oldest age of its minutes); None where no sample was written."""

    queue: str
    queued: list[int | None]
    oldest_age: list[float | None]


def sample_series(*, since: datetime, now: datetime, step: timedelta, trunc) -> list[SampleSeries]:
    """The samples since ``since`` per queue, a point per ``step`` (the window's bar, truncated
    in SQL with ``trunc``): one query over the index on (at, queue), whose rows are at most one
    per queue and minute of the window."""
    points = int((now - since) / step) + 1
    series: dict[str, SampleSeries] = {}
    rows = (
        QueueSample.objects.filter(at__gte=since, at__lte=now)
        .annotate(bar=trunc("at", tzinfo=UTC))
        .values("queue", "bar")
        .annotate(queued=Max("queued"), oldest=Max("oldest_age"))
        .order_by()
    )
    for row in rows:
        i = int((row["bar"] - since) / step)
        if not 0 <= i < points:
            continue
        s = series.setdefault(
            row["queue"], SampleSeries(row["queue"], [None] * points, [None] * points)
        )
        s.queued[i] = max(s.queued[i] or 0, row["queued"])
        if row["oldest"] is not None:
            s.oldest_age[i] = max(s.oldest_age[i] or 0, row["oldest"])
    return sorted(series.values(), key=lambda s: s.queue)
