"""Hourly, daily and all-time rollups of executions, per agent and for the whole site, and how
readers combine them with raw rows.

Which executions a rollup counts
--------------------------------
An execution belongs to the hour and the day (UTC) its ``created_at`` falls in: the dashboard's
windows, the admin lists its figures link to, the agent page and the API's stats all count runs
by creation time, so a window of whole hours adds up to the same figures from rollups as from
rows. A rollup counts only the executions of its period that have *settled*: finished
(succeeded, failed or cancelled) before the cursor's ``settled_before`` (:func:`settled`). A run
still queued, running or retrying has no final status yet, and may keep it for days (delayed,
paused agent, long backoff); it is read from its row until it settles.

Each period has a row per agent and a site-wide row (``agent`` empty: every agent's runs, and
those of agents deleted since). The all-time rows (period ``all``) add up every rolled hour, for
/metrics' totals.

:class:`~ops.models.RollupCursor` holds ``hours_until`` (every hour before it is rolled, every
day that ends by it, and the all-time rows count them all) and ``settled_before``. The
invariant: the rollup of every rolled period counts exactly the executions created in it that
finished before ``settled_before``.

``roll_up(until=...)``:

1. Locks the cursor (one roll at a time: the hourly beat entry and the retention task).
2. Rolls the hours that ended since the last roll, and the days that ended with them, from raw
   rows: created in the period, finished before the new ``settled_before`` (``until`` minus
   :data:`SETTLE`). Their rows are written whole, overwriting any there (on Postgres in one
   INSERT ... SELECT per period kind, :func:`_insert_in_sql`; elsewhere through Python).
3. Adds the *late finishers* to the periods rolled before: executions created in those periods
   that finished between the old and the new ``settled_before``. Only they are added, never the
   period recomputed: retention may have deleted its other rows by then. The all-time rows get
   the new hours' runs and the late finishers, the same way.
4. Moves the cursor. Running it twice with the same ``until`` changes nothing; when no hour has
   ended it only looks for late finishers (one index range on ``finished_at``).

``settled_before`` trails ``until`` by :data:`SETTLE`: a transition stamps ``finished_at`` a
moment before it commits, and a run that committed after a roll with a ``finished_at`` before
it would be missed for good (step 3 looks only past the old ``settled_before``). Deleting the
cursor rebuilds every period from the rows still there.

Reading
-------
:func:`split` cuts a window ``[since, now]`` in two: the rollups of the whole periods between
the first hour boundary at or after ``since`` and ``hours_until`` (days where a whole day fits,
hours at the edges; with no ``since``, the all-time rows), and the raw rows the rollups do not
count: those of the partial first hour, those created since ``hours_until`` (the current hour)
and those of rolled periods that had not settled at the last roll (:func:`unsettled`: active
ones, through the partial index on active statuses, and those finished since, through the index
on ``finished_at``). Without a cursor (no roll yet) everything is raw.

Durations: each rollup keeps the exact median and 95th percentile of its period's successful
runs (``percentile_cont`` on Postgres, the same interpolation in Python on SQLite) and a
histogram of their durations in buckets 2% wide (:func:`histogram_key`). A window's
percentiles merge the histograms of its rollups with the exact durations of its raw rows: exact
when the window is all raw, within 1% of the exact figure otherwise. A rollup to which late
finishers were added takes its percentiles from its merged histogram.

Start latencies (ops.backlog.start_latency: from when a run could start to its first attempt's
start) of every run that started are kept the same way, as a count, a sum and a histogram
(``latencies``), so the dashboard's latency percentiles per hour and /metrics' latency
histogram outlive the rows too.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Count, DateTimeField, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Trunc
from django.utils import timezone

from executions.models import Execution
from executions.selectors import percentile

from .backlog import ready_at, start_latency
from .models import Rollup, RollupCursor

logger = logging.getLogger("conveyor.ops")

Status = Execution.Status
HOUR, DAY, ALL = Rollup.Period.HOUR, Rollup.Period.DAY, Rollup.Period.ALL
LENGTH = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}
#: The start of the all-time period.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How long after ``finished_at`` a finished run is certainly committed (see the docstring).
SETTLE = timedelta(minutes=5)
#: Histogram buckets of /metrics, in seconds (Prometheus' "le" bounds; +Inf is the count).
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Relative precision of the durations histogram: a bucket's representative value is within 1%
#: of every duration in it. Durations under SHORTEST seconds share the lowest bucket.
PRECISION = 0.01
GAMMA = (1 + PRECISION) / (1 - PRECISION)
LOG_GAMMA = math.log(GAMMA)
SHORTEST = 0.001


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


# --- Periods ------------------------------------------------------------------------------------


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    floor = floor_hour(at)
    return floor if floor == at else floor + LENGTH[HOUR]


def floor_day(at: datetime) -> datetime:
    return floor_hour(at).replace(hour=0)


def ceil_day(at: datetime) -> datetime:
    floor = floor_day(at)
    return floor if floor == at else floor + LENGTH[DAY]


def period_start(kind: str):
    """The start of the period (hour or day, UTC) an execution belongs to, by its creation."""
    if kind == ALL:
        return Value(EPOCH, output_field=DateTimeField())
    return Trunc("created_at", kind, tzinfo=UTC)


def created_between(start: datetime | None, end: datetime | None) -> Q:
    """Executions created in [start, end) (None: unbounded), i.e. those of the periods there."""
    q = Q()
    if start is not None:
        q &= Q(created_at__gte=start)
    if end is not None:
        q &= Q(created_at__lt=end)
    return q


def settled(before: datetime) -> Q:
    """The executions a rollup counts: finished (final status) before ``before``."""
    return Q(status__in=Execution.TERMINAL_STATUSES, finished_at__lt=before)


def unsettled(before: datetime) -> Q:
    """The complement of :func:`settled` (every finished execution has a ``finished_at``),
    written for the two partial indexes (active statuses; finished_at)."""
    return Q(status__in=Execution.ACTIVE_STATUSES) | Q(finished_at__gte=before)


# --- Durations ----------------------------------------------------------------------------------


def histogram_key(seconds: float) -> int:
    """The bucket of a duration: (GAMMA^(k-1), GAMMA^k] holds key k."""
    return math.ceil(math.log(max(seconds, SHORTEST)) / LOG_GAMMA)


def bucket_value(key: int) -> float:
    """The value a bucket stands for: within PRECISION of every duration in it."""
    return 2 * GAMMA**key / (GAMMA + 1)


class Durations:
    """Durations of successful runs to take percentiles of: exact values (raw rows) and
    histograms (rollups, each bucket counted at its representative value)."""

    def __init__(self) -> None:
        self.counts: Counter[float] = Counter()

    def add_values(self, seconds: Iterable[float]) -> None:
        self.counts.update(seconds)

    def add_histogram(self, histogram: dict) -> None:
        for key, n in histogram.items():
            if n:
                self.counts[bucket_value(int(key))] += int(n)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def percentile(self, q: float) -> float | None:
        """Linear interpolation between closest ranks (as ``percentile_cont`` and
        ``executions.selectors.percentile``), over the weighted values."""
        total = len(self)
        if not total:
            return None
        rank = (total - 1) * q
        low = int(rank)
        high = min(low + 1, total - 1)
        at_low = at_high = None
        seen = 0
        for value, n in sorted(self.counts.items()):
            seen += n
            if at_low is None and low < seen:
                at_low = value
            if high < seen:
                at_high = value
                break
        return at_low + (at_high - at_low) * (rank - low)


# --- Counting -----------------------------------------------------------------------------------


def bound_key(seconds: float) -> str:
    """How a bound of DURATION_BUCKETS is written in ``Rollup.duration_le``."""
    return f"{seconds:g}"


@dataclass
class Figures:
    """What a rollup counts, for a set of executions (raw rows or rollups, or both added)."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Queued, running or retrying (raw rows only: a rollup counts settled runs).
    active: int = 0
    #: (status, error category) -> executions.
    categories: Counter = field(default_factory=Counter)
    attempts: int = 0
    retries: int = 0
    duration_count: int = 0
    duration_sum: float = 0.0
    #: Cumulative counts per bound of DURATION_BUCKETS.
    duration_le: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    #: Start latencies (rollups only: raw rows' are read apart, ``start_latencies``).
    latency_count: int = 0
    latency_sum: float = 0.0

    @property
    def runs(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.active

    def add(self, other: Figures) -> None:
        for name in (
            "succeeded",
            "failed",
            "cancelled",
            "active",
            "attempts",
            "retries",
            "duration_count",
            "duration_sum",
            "latency_count",
            "latency_sum",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.categories.update(other.categories)
        self.duration_le = [a + b for a, b in zip(self.duration_le, other.duration_le, strict=True)]

    def rollup_json(self) -> dict:
        return {
            "categories": {f"{s}:{c}": n for (s, c), n in sorted(self.categories.items()) if n},
            "duration_le": {
                bound_key(b): n for b, n in zip(DURATION_BUCKETS, self.duration_le, strict=True)
            },
        }


def count(rows: QuerySet[Execution], kind: str) -> dict[tuple[int, datetime], Figures]:
    """The executions of ``rows`` counted per agent and period (``kind``), in one GROUP BY."""
    bounds = {
        f"le_{i}": Count("duration", filter=Q(duration__lte=timedelta(seconds=b)))
        for i, b in enumerate(DURATION_BUCKETS)
    }
    grouped = (
        rows.annotate(start=period_start(kind))
        .values("agent_id", "start", "status", "error_category")
        .annotate(
            n=Count("status"),
            attempts=Sum("attempt"),
            retries=Sum(F("attempt") - 1, filter=Q(attempt__gt=1)),
            duration_count=Count("duration"),
            duration_sum=Sum("duration"),
            **bounds,
        )
        .order_by()
    )
    found: dict[tuple[int, datetime], Figures] = {}
    for row in grouped:
        figures = found.setdefault((row["agent_id"], row["start"]), Figures())
        status, n = row["status"], row["n"]
        if status in Execution.ACTIVE_STATUSES:
            figures.active += n
        else:
            setattr(figures, status, getattr(figures, status) + n)
        figures.categories[(status, row["error_category"])] += n
        figures.attempts += row["attempts"] or 0
        figures.retries += row["retries"] or 0
        figures.duration_count += row["duration_count"]
        if row["duration_sum"] is not None:
            figures.duration_sum += row["duration_sum"].total_seconds()
        for i in range(len(DURATION_BUCKETS)):
            figures.duration_le[i] += row[f"le_{i}"]
    return found


def succeeded_durations(rows: QuerySet[Execution]):
    """The successful runs of ``rows`` that have a duration (those the percentiles are of)."""
    return rows.filter(status=Status.SUCCEEDED, duration__isnull=False)


def started(rows: QuerySet[Execution]):
    """The runs of ``rows`` that started (those with a start latency, ops.backlog)."""
    return rows.filter(started_at__isnull=False)


def start_latencies(rows: QuerySet[Execution], *, by: str | None = None):
    """The start latencies (seconds, ops.backlog.start_latency) of the runs of ``rows`` that
    started: a list, or {value of the column ``by``: list} (one query)."""
    columns = ("created_at", "not_before", "started_at")
    found: dict = {}
    for row in started(rows).values_list(*columns, *([by] if by else [])):
        seconds = start_latency(created_at=row[0], not_before=row[1], started_at=row[2])
        found.setdefault(row[3] if by else None, []).append(seconds)
    return found if by else found.get(None, [])


def histogram(seconds: Iterable[float]) -> dict[str, int]:
    """Durations as ``Rollup.durations`` and ``Rollup.latencies`` keep them: {key: n}."""
    return {str(k): n for k, n in sorted(Counter(map(histogram_key, seconds)).items())}


# --- Writing ------------------------------------------------------------------------------------

ROLLUP_FIELDS = [
    "succeeded",
    "failed",
    "cancelled",
    "categories",
    "attempts",
    "retries",
    "p50",
    "p95",
    "durations",
    "duration_count",
    "duration_sum",
    "duration_le",
    "latency_count",
    "latency_sum",
    "latencies",
    "updated_at",
]


def _rollups(rows: QuerySet[Execution], kind: str, *, at: datetime) -> dict[tuple, Rollup]:
    """Unsaved rollups of ``rows`` (settled executions) per agent and period ``kind``, and
    site-wide (agent None): the counts in one GROUP BY, the successful runs' durations in
    Python (percentiles, histogram). SQLite's way, and every database's for what is added to
    rolled periods (what settled since the last roll); :func:`_insert_in_sql` is Postgres' for whole
    periods, held to this one row for row (tests/ops/test_rollups.py)."""
    figures = count(rows, kind)
    if not figures:
        return {}
    for (_agent_id, start), f in list(figures.items()):
        figures.setdefault((None, start), Figures()).add(f)
    values: dict[tuple, list[float]] = {}
    successes = succeeded_durations(rows).annotate(start=period_start(kind))
    for agent_id, start, duration in successes.values_list("agent_id", "start", "duration"):
        seconds = duration.total_seconds()
        values.setdefault((agent_id, start), []).append(seconds)
        values.setdefault((None, start), []).append(seconds)
    latencies: dict[tuple, list[float]] = {}
    for agent_id, start, *times in (
        started(rows)
        .annotate(start=period_start(kind))
        .values_list("agent_id", "start", "created_at", "not_before", "started_at")
    ):
        seconds = start_latency(created_at=times[0], not_before=times[1], started_at=times[2])
        latencies.setdefault((agent_id, start), []).append(seconds)
        latencies.setdefault((None, start), []).append(seconds)
    rollups = {}
    for key, f in figures.items():
        seconds = sorted(values.get(key, ()))
        waits = latencies.get(key, [])
        rollups[key] = Rollup(
            agent_id=key[0],
            period=kind,
            start=key[1],
            succeeded=f.succeeded,
            failed=f.failed,
            cancelled=f.cancelled,
            attempts=f.attempts,
            retries=f.retries,
            p50=percentile(seconds, 0.5),
            p95=percentile(seconds, 0.95),
            durations=histogram(seconds),
            duration_count=f.duration_count,
            duration_sum=f.duration_sum,
            latency_count=len(waits),
            latency_sum=math.fsum(waits),
            latencies=histogram(waits),
            updated_at=at,
            **f.rollup_json(),
        )
    return rollups


def _added(old: Rollup, new: Rollup) -> Rollup:
    """``new`` (runs added to a period) with ``old`` (the period's rollup) added to it."""
    for name in (
        "succeeded",
        "failed",
        "cancelled",
        "attempts",
        "retries",
        "duration_count",
        "latency_count",
    ):
        setattr(new, name, getattr(old, name) + getattr(new, name))
    new.duration_sum += old.duration_sum
    new.latency_sum += old.latency_sum
    for name in ("categories", "durations", "duration_le", "latencies"):
        total = Counter(getattr(old, name))
        total.update(getattr(new, name))
        setattr(new, name, dict(sorted(total.items())))
    if old.durations:
        # The period's own durations may be gone (retention): its histogram stands for them.
        both = Durations()
        both.add_histogram(new.durations)
        new.p50, new.p95 = both.percentile(0.5), both.percentile(0.95)
    return new


def _save(rollups: dict[tuple, Rollup], kind: str, *, add: bool) -> int:
    """Write ``rollups`` (of one period kind): over the rows there, or ``add``-ed to them.
    The cursor's lock makes this roll the only writer."""
    if not rollups:
        return 0
    starts = [start for _, start in rollups]
    there = Rollup.objects.filter(period=kind, start__gte=min(starts), start__lte=max(starts))
    update = []
    for old in there.filter(
        Q(agent__isnull=True) | Q(agent_id__in={a for a, _ in rollups if a is not None})
    ):
        new = rollups.pop((old.agent_id, old.start), None)
        if new is not None:
            if add:
                new = _added(old, new)
            new.pk = old.pk
            update.append(new)
    Rollup.objects.bulk_update(update, ROLLUP_FIELDS, batch_size=500)
    Rollup.objects.bulk_create(rollups.values(), batch_size=500)
    return len(update) + len(rollups)


def _insert_in_sql(rows: QuerySet[Execution], kind: str, *, at: datetime) -> int:
    """Postgres: the rollups of ``rows`` (settled executions) per agent and period ``kind``,
    and site-wide, aggregated and written by the database in one statement (``percentile_cont``,
    the histogram's keys as :func:`histogram_key` computes them), overwriting rows already
    there. Returns the number of rows written.

    The rows and their periods are those of the ORM's ``rows`` and :func:`period_start`; the
    figures are those :func:`_rollups` computes in Python (tests/ops/test_rollups.py compares
    them row for row). A first roll of a big table writes its history in seconds this way.
    The site-wide rows are the grouping sets without the agent (``a`` 0).
    """
    inner, inner_params = (
        rows.annotate(start=period_start(kind), ready=ready_at())
        .values(
            "agent_id",
            "start",
            "status",
            "error_category",
            "attempt",
            "duration",
            "started_at",
            "ready",
        )
        .order_by()
        .query.sql_with_params()
    )
    le = ", ".join(["%s, count(*) FILTER (WHERE duration <= %s)"] * len(DURATION_BUCKETS))
    le_params = [p for b in DURATION_BUCKETS for p in (bound_key(b), timedelta(seconds=b))]
    succeeded = "status = %s AND duration IS NOT NULL"
    table = connection.ops.quote_name(Rollup._meta.db_table)
    latency = "GREATEST(date_part('epoch', started_at - ready), 0)"
    columns = """agent_id, period, "start", succeeded, failed, cancelled, categories,
        attempts, retries, p50, p95, durations, duration_count, duration_sum, duration_le,
        latency_count, latency_sum, latencies, updated_at"""
    values = """%s, g."start", g.succeeded, g.failed, g.cancelled, g.categories, g.attempts,
        g.retries, g.p50, g.p95, g.durations, g.duration_count, g.duration_sum, g.duration_le,
        g.latency_count, g.latency_sum, g.latencies, %s"""
    update = ", ".join(f"{f} = EXCLUDED.{f}" for f in ROLLUP_FIELDS)
    sql = f"""
        WITH r AS MATERIALIZED ({inner}),
        counts AS (
            SELECT coalesce(agent_id, 0) AS a, "start",
                count(*) FILTER (WHERE status = %s) AS succeeded,
                count(*) FILTER (WHERE status = %s) AS failed,
                count(*) FILTER (WHERE status = %s) AS cancelled,
                coalesce(sum(attempt), 0) AS attempts,
                coalesce(sum(attempt - 1) FILTER (WHERE attempt > 1), 0) AS retries,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', duration))
                    FILTER (WHERE {succeeded}) AS p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY date_part('epoch', duration))
                    FILTER (WHERE {succeeded}) AS p95,
                count(duration) AS duration_count,
                coalesce(sum(date_part('epoch', duration)), 0) AS duration_sum,
                jsonb_build_object({le}) AS duration_le,
                count(started_at) AS latency_count,
                coalesce(sum({latency}), 0) AS latency_sum
            FROM r GROUP BY GROUPING SETS ((agent_id, "start"), ("start"))
        ),
        categories AS (
            SELECT a, "start", jsonb_object_agg(status || ':' || error_category, n) AS categories
            FROM (
                SELECT coalesce(agent_id, 0) AS a, "start", status, error_category,
                    count(*) AS n
                FROM r GROUP BY GROUPING SETS (
                    (agent_id, "start", status, error_category), ("start", status, error_category)
                )
            ) s GROUP BY a, "start"
        ),
        histograms AS (
            SELECT a, "start", jsonb_object_agg(key::text, n) AS durations FROM (
                SELECT coalesce(agent_id, 0) AS a, "start", key, count(*) AS n FROM (
                    SELECT agent_id, "start",
                        CEIL(LN(GREATEST(date_part('epoch', duration), %s)) / %s)::integer AS key
                    FROM r WHERE {succeeded}
                ) k GROUP BY GROUPING SETS ((agent_id, "start", key), ("start", key))
            ) s GROUP BY a, "start"
        ),
        latency_histograms AS (
            SELECT a, "start", jsonb_object_agg(key::text, n) AS latencies FROM (
                SELECT coalesce(agent_id, 0) AS a, "start", key, count(*) AS n FROM (
                    SELECT agent_id, "start",
                        CEIL(LN(GREATEST({latency}, %s)) / %s)::integer AS key
                    FROM r WHERE started_at IS NOT NULL
                ) k GROUP BY GROUPING SETS ((agent_id, "start", key), ("start", key))
            ) s GROUP BY a, "start"
        ),
        g AS MATERIALIZED (
            SELECT counts.*, categories.categories,
                coalesce(histograms.durations, '{{}}'::jsonb) AS durations,
                coalesce(latency_histograms.latencies, '{{}}'::jsonb) AS latencies
            FROM counts JOIN categories USING (a, "start")
            LEFT JOIN histograms USING (a, "start")
            LEFT JOIN latency_histograms USING (a, "start")
        ),
        agents AS (
            INSERT INTO {table} ({columns}) SELECT g.a, {values} FROM g WHERE g.a <> 0
            ON CONFLICT (agent_id, period, "start") DO UPDATE SET {update}
            RETURNING 1
        ),
        site AS (
            INSERT INTO {table} ({columns}) SELECT NULL, {values} FROM g WHERE g.a = 0
            ON CONFLICT (period, "start") WHERE agent_id IS NULL DO UPDATE SET {update}
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM agents) + (SELECT count(*) FROM site)
    """  # noqa: S608 - names from the models, values as parameters
    params = [
        *inner_params,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELLED,
        Status.SUCCEEDED,
        Status.SUCCEEDED,
        *le_params,
        SHORTEST,
        LOG_GAMMA,
        Status.SUCCEEDED,
        SHORTEST,
        LOG_GAMMA,
        kind,
        at,
        kind,
        at,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _write(rows: QuerySet[Execution], kind: str, *, at: datetime, in_sql: bool | None = None):
    """Write the rollups of whole periods from their rows (``rows``: settled executions),
    overwriting what is there: in SQL on Postgres, through Python elsewhere."""
    if is_postgres() if in_sql is None else in_sql:
        return _insert_in_sql(rows, kind, at=at)
    return _save(_rollups(rows, kind, at=at), kind, add=False)


def _add(rows: QuerySet[Execution], kind: str, *, at: datetime) -> int:
    """Add ``rows`` (settled executions not counted yet) to the rollups of their periods."""
    return _save(_rollups(rows, kind, at=at), kind, add=True)


def roll_up(*, until: datetime) -> int:
    """Write the rollups of every whole hour before ``until`` not rolled yet, and of every whole
    day (UTC) that ends by then, and add the runs that settled since the last roll to the
    periods rolled before (see the module docstring). Returns the number of rows written."""
    at = timezone.now()
    RollupCursor.objects.get_or_create(pk=1)
    with transaction.atomic():
        cursor = RollupCursor.objects.select_for_update().get(pk=1)
        old_hours, old_settled = cursor.hours_until, cursor.settled_before
        hours_until, settled_before = floor_hour(until), until - SETTLE
        if old_hours is not None:  # never backwards (an older ``until`` changes nothing)
            hours_until = max(hours_until, old_hours)
            settled_before = max(settled_before, old_settled)
        if (old_hours, old_settled) == (hours_until, settled_before):
            return 0
        written = 0
        executions = Execution.objects.filter(settled(settled_before))
        # 1. The periods that ended since the last roll, from their rows.
        if old_hours is None or hours_until > old_hours:
            new_hours = executions.filter(created_between(old_hours, hours_until))
            written += _write(new_hours, HOUR, at=at)
            first_day = floor_day(old_hours) if old_hours is not None else None
            if first_day is None or floor_day(hours_until) > first_day:
                new_days = executions.filter(created_between(first_day, floor_day(hours_until)))
                written += _write(new_days, DAY, at=at)
        if old_hours is None:
            written += _write(executions.filter(created_at__lt=hours_until), ALL, at=at)
        else:
            # 2. Runs of the periods rolled before that settled since: added to their rollups;
            # and to the all-time rows, with the new hours' runs.
            late = executions.filter(created_at__lt=old_hours, finished_at__gte=old_settled)
            some_late = late.exists()
            if some_late:
                written += _add(late, HOUR, at=at)
                written += _add(late.filter(created_at__lt=floor_day(old_hours)), DAY, at=at)
            if some_late or hours_until > old_hours:
                new = executions.filter(created_at__gte=old_hours, created_at__lt=hours_until)
                written += _add(late | new, ALL, at=at)
        cursor.hours_until, cursor.settled_before = hours_until, settled_before
        cursor.save(update_fields=["hours_until", "settled_before", "updated_at"])
    logger.info(
        "rollups written",
        extra={
            "action": "ops_rolled_up",
            "rows": written,
            "hours_until": hours_until.isoformat(),
            "settled_before": settled_before.isoformat(),
        },
    )
    return written


# --- Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """A window read as rollups of whole periods plus the raw rows they do not count."""

    #: The site-wide rollups covering the window's whole rolled periods once each.
    site: QuerySet[Rollup]
    #: The agents' rollups of the same periods.
    agents: QuerySet[Rollup]
    #: The same periods as site-wide hourly rollups (for per-hour charts).
    site_hours: QuerySet[Rollup]
    #: The window's executions that the rollups do not count.
    raw: QuerySet[Execution]
    #: ``agents`` as one queryset per range of periods (the whole days, the hours before and
    #: after them), for :func:`rollup_totals` over every agent: each range is read from the
    #: index alone, where Postgres reads the whole index for ``agents``' OR of the ranges.
    agents_parts: tuple[QuerySet[Rollup], ...] = ()
    #: What the rollups are as of this split (the cursor's state, which every roll changes in
    #: the transaction that writes them): :func:`rollup_totals` and :func:`json_totals` keep
    #: their rows per process while it stays the same (``version=``). None: nothing rolled.
    version: tuple | None = None


def split(*, since: datetime | None, until: datetime | None = None) -> Split:
    """How to read the executions created since ``since`` (None: all of them) and, with
    ``until`` (a whole hour), before it. One query."""
    if until is not None and until != floor_hour(until):
        raise ValueError("A window's end is a whole hour.")
    executions = Execution.objects.filter(created_between(since, until))
    cursor = RollupCursor.objects.filter(pk=1).first()
    rolled = cursor.hours_until if cursor is not None else None
    # The rollups end where the cursor does, or at the window's end if it comes first.
    end = rolled if until is None or rolled is None else min(until, rolled)
    first = ceil_hour(since) if since is not None else None
    if end is None or (first is not None and first >= end):
        nothing = Rollup.objects.none()
        return Split(nothing, nothing, nothing, executions)
    if first is None:
        if end != rolled:
            raise ValueError("A window with an end needs a start.")
        periods = hours = Q(period=ALL)
        parts = (periods,)
    else:
        hours = Q(period=HOUR, start__gte=first, start__lt=end)
        # Days where whole days fit, hours before the first and after the last.
        first_day, last_day = ceil_day(first), floor_day(end)
        if first_day < last_day:
            parts = (
                Q(period=DAY, start__gte=first_day, start__lt=last_day),
                Q(period=HOUR, start__gte=first, start__lt=first_day),
                Q(period=HOUR, start__gte=last_day, start__lt=end),
            )
            periods = parts[0] | parts[1] | parts[2]
        else:
            periods = hours
            parts = (hours,)
    raw = Q(created_at__gte=end) | unsettled(cursor.settled_before)
    if first is not None and first != since:
        raw |= Q(created_at__lt=first)  # the partial first hour
    rollups = Rollup.objects.filter(periods)
    return Split(
        site=rollups.filter(agent__isnull=True),
        agents=rollups.filter(agent__isnull=False),
        site_hours=Rollup.objects.filter(hours, agent__isnull=True),
        raw=executions.filter(raw),
        agents_parts=tuple(Rollup.objects.filter(q, agent__isnull=False) for q in parts),
        version=(cursor.hours_until, cursor.settled_before, cursor.updated_at),
    )


TOTALS = (
    "succeeded",
    "failed",
    "cancelled",
    "attempts",
    "retries",
    "duration_count",
    "duration_sum",
)


class _KeptRows:
    """The rows of statements over rollups, kept in this process while the rollups stay the
    same (``Split.version``): only a roll changes them (once an hour), so a page looked at
    again and again reads them once per roll instead of at every request. A new version forgets
    every row kept for the one before; a row of a deleted agent may stay until then, which the
    readers drop with the agents they no longer find."""

    #: Statements kept at most (a few per window and page), beyond which all are forgotten.
    limit = 64

    def __init__(self) -> None:
        self.version: tuple | None = None
        self.rows: dict[tuple, list[tuple]] = {}

    def fetch(self, sql: str, params: list, version: tuple | None) -> list[tuple]:
        key = (connection.alias, sql, tuple(params))
        try:
            hash(key)
        except TypeError:  # a parameter that cannot be a key (a list): read it each time
            version = None
        if version is None:
            return _fetch(sql, params)
        if version != self.version:
            self.version, self.rows = version, {}
        rows = self.rows.get(key)
        if rows is None:
            if len(self.rows) >= self.limit:
                self.rows = {}
            rows = self.rows[key] = _fetch(sql, params)
        return rows


def _fetch(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


kept_rows = _KeptRows()


def rollup_totals(
    rollups: QuerySet[Rollup] | tuple[QuerySet[Rollup], ...],
    *,
    by: str | None = None,
    fields: Iterable[str] = TOTALS,
    version: tuple | None = None,
):
    """The counts (``fields``) of ``rollups`` added up in SQL: one Figures, or per ``by`` (a
    column: "agent_id", "start") {value: Figures}. Categories and histograms: json_totals.

    ``rollups`` may be a tuple of querysets of distinct rows (``Split.agents_parts``), read
    as one UNION ALL with ``by``; its rows are kept while the rollups' ``version`` stays."""
    if isinstance(rollups, tuple):
        return _union_totals(rollups, by=by, fields=tuple(fields), version=version)
    sums = {name: Sum(name) for name in fields}
    if by is None:
        row = rollups.aggregate(**sums)
        return Figures(**{name: row[name] or 0 for name in fields})
    rows = rollups.values(by).annotate(**sums).order_by()
    return {row[by]: Figures(**{name: row[name] for name in fields}) for row in rows}


def _union_totals(
    parts: tuple[QuerySet[Rollup], ...],
    *,
    by: str | None,
    fields: tuple[str, ...],
    version: tuple | None,
) -> dict:
    if by is None:
        raise ValueError("A tuple of rollups is added up per column (by=...).")
    selects, params = [], []
    for part in parts:
        try:
            sql, part_params = part.values(by, *fields).order_by().query.sql_with_params()
        except EmptyResultSet:
            continue
        selects.append(sql)
        params.extend(part_params)
    if not selects:
        return {}
    q = connection.ops.quote_name
    sums = ", ".join(f"SUM(u.{q(name)})" for name in fields)
    union = " UNION ALL ".join(selects)
    sql = f"SELECT u.{q(by)}, {sums} FROM ({union}) u GROUP BY u.{q(by)}"  # noqa: S608 - names from the model, values as parameters
    rows = kept_rows.fetch(sql, params, version)
    return {row[0]: Figures(**dict(zip(fields, row[1:], strict=True))) for row in rows}


def json_totals(
    rollups: QuerySet[Rollup], name: str, *, by_agent: bool = False, version: tuple | None = None
) -> dict:
    """The values of a JSON object field of ``rollups`` (``categories``, ``durations``,
    ``duration_le``) added up key by key, in SQL: {key: n}, or {agent_id: {key: n}}; the rows
    are kept while the rollups' ``version`` (``Split.version``) stays."""
    try:
        inner, params = rollups.values("agent_id", name).order_by().query.sql_with_params()
    except EmptyResultSet:
        return {}
    column = connection.ops.quote_name(name)
    if is_postgres():
        each, value = f"jsonb_each_text(r.{column})", "j.value::bigint"
    else:
        each, value = f"json_each(r.{column})", "j.value"
    group = "r.agent_id, j.key" if by_agent else "j.key"
    sql = f"SELECT {group}, SUM({value}) FROM ({inner}) r, {each} j GROUP BY {group}"  # noqa: S608 - names from the model, values as parameters
    rows = kept_rows.fetch(sql, list(params), version)
    if not by_agent:
        return {key: int(n) for key, n in rows}
    found: dict[int, dict] = {}
    for agent_id, key, n in rows:
        found.setdefault(agent_id, {})[key] = int(n)
    return found
