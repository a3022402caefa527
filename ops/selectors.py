"""Read-side queries of the operations dashboard, /metrics and the agent statistics.

The figures about past executions (counts by outcome and category, durations, attempts) add up
the hourly and daily rollups of the whole past hours (ops.rollups) and aggregate the executions
table only for the rest: the current hour, runs not settled at the last roll, and a window's
partial first hour. So they outlive retention, and their cost follows the number of agents and
periods, not the size of the table. Python only shapes aggregated rows (one per agent, period,
category or time bucket), and the raw rows' durations, which are the current hour's at most; every
function runs a fixed number of queries whatever the number of rows
(tests/ops/test_views_dashboard.py counts them).

Windows are on creation time (an execution belongs to the hour it was created in), so a figure
and the admin list it links to agree; the 24-hour and 7-day windows start on the hour, so that
they are whole hours of rollups and the current one.

Counts of raw rows are ``COUNT(status)`` (never NULL, so the same as ``COUNT(*)``, which Django
does not allow with a filter), not ``COUNT(id)``.

Indexes used (see ``Execution.Meta.indexes`` and ``Rollup.Meta``):

* ``rollup_period_start``: the rollups of a window, or of all time (/metrics).
* ``execution_recent_status`` (created_at, status): the raw rows of the current hour and of a
  partial first hour, and the last hour's minutes.
* ``execution_active`` (partial, active statuses) and ``execution_finished``: the rolled
  periods' runs that had not settled at the last roll; live counts and stuck executions.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import (
    BooleanField,
    Count,
    DateTimeField,
    F,
    Func,
    Min,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, TruncHour, TruncMinute
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from executions.errors import Category
from executions.models import Execution, ExecutionAttempt, Limiter
from executions.selectors import STATS_WINDOW

from . import backlog, rollups
from .backlog import QueueBacklog, SampleSeries, start_latency
from .rollups import Durations

Status = Execution.Status

# Rows in the dashboard's tables (percentiles are taken for the busiest agents).
TOP_AGENTS = 12
STUCK_LIMIT = 20
# Histogram buckets of /metrics, in seconds (Prometheus' "le" bounds; +Inf is added).
DURATION_BUCKETS = rollups.DURATION_BUCKETS
# Buckets of /metrics' start latency histogram, in seconds (a run starts in milliseconds when a
# worker is free, in minutes when the queue is backed up).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


# --- SQL helpers -------------------------------------------------------------------------------


class RanLongerThan(Func):
    """``start + seconds < at``, true when something that started at ``start`` has been going
    for more than ``seconds`` at ``at`` (Postgres and SQLite)."""

    output_field = BooleanField()
    arity = 3

    def as_sql(self, compiler, connection, **extra):
        (start, p1), (seconds, p2), (at, p3) = (
            compiler.compile(e) for e in self.get_source_expressions()
        )
        if connection.vendor == "postgresql":
            return f"({start} + ({seconds}) * INTERVAL '1 second' < {at})", (*p1, *p2, *p3)
        return (
            f"((julianday({at}) - julianday({start})) * 86400.0 > ({seconds}))",
            (*p3, *p1, *p2),
        )


def _at(value: datetime):
    return Value(value, output_field=DateTimeField())


# --- Links to the admin ------------------------------------------------------------------------


def admin_executions_url(*, base: str | None = None, **params) -> str:
    """The execution changelist filtered by ``params`` (Django lookups, as the admin reads them).
    ``base``: the changelist's address, when the caller makes many links (reversed once)."""
    query = {}
    for key, value in params.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(microsecond=0).isoformat()
        elif isinstance(value, timedelta):
            value = str(value)
        query[key] = value
    url = base or reverse("admin:executions_execution_changelist")
    return f"{url}?{urlencode(query)}" if query else url


# --- Time windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeWindow:
    key: str
    label: str
    span: timedelta
    #: Width of one bar of the throughput chart, and the SQL truncation its bars are added up
    #: from (a bar may hold several truncated units).
    bucket: timedelta
    trunc: type
    #: Width of one clickable slice of the chart (one bar, or several if bars are shorter).
    slice: timedelta

    def start(self, now: datetime) -> datetime:
        """The first bucket's start: the window ends with the bucket ``now`` falls in."""
        seconds = self.bucket.total_seconds()
        floored = datetime.fromtimestamp(now.timestamp() // seconds * seconds, tz=UTC)
        return floored + self.bucket - self.span


MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
WINDOWS = {
    w.key: w
    for w in (
        # key, label, span, width of a bar and its SQL truncation, width of a clickable slice.
        # Hourly bars come from the hourly rollups (and the current hour's rows); the last
        # hour's minutes from the rows.
        TimeWindow("1h", "Last hour", HOUR, MINUTE, TruncMinute, MINUTE),
        TimeWindow("24h", "Last 24 hours", DAY, HOUR, TruncHour, HOUR),
        TimeWindow("7d", "Last 7 days", 7 * DAY, HOUR, TruncHour, HOUR),
    )
}
DEFAULT_WINDOW = "24h"


# --- The window's figures ----------------------------------------------------------------------


class Outcomes:
    """Rates over the finished runs (succeeded or failed) of a row that counts them."""

    succeeded: int
    failed: int

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None

    @property
    def failure_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.failed / finished if finished else None


@dataclass
class Overview(Outcomes):
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    p50: float | None = None
    p95: float | None = None


@dataclass
class AgentFigures(Outcomes):
    agent_id: int
    name: str
    owner: str
    runs: int
    succeeded: int
    failed: int
    p50: float | None = None
    p95: float | None = None


@dataclass
class Bucket:
    start: datetime
    succeeded: int = 0
    failed: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.other


@dataclass(frozen=True)
class WindowRows:
    """The executions created since ``since``: rollups of its whole past hours and the raw rows
    they do not count (ops.rollups.split), the raw ones counted per agent and hour once for all
    the window's figures."""

    since: datetime
    split: rollups.Split
    raw: dict[tuple[int, datetime], rollups.Figures]


def window_rows(*, since: datetime) -> WindowRows:
    """Two queries: the rollup cursor, and the raw rows' counts."""
    part = rollups.split(since=since)
    return WindowRows(since, part, rollups.count(part.raw, rollups.HOUR))


def _durations(rows: WindowRows, agent_ids: list[int]) -> tuple[Durations, dict[int, Durations]]:
    """The successful runs' durations of the whole window and of the agents ``agent_ids``: the
    rollups' histograms (site-wide, and the agents') and the raw rows' exact durations (three
    queries)."""
    overall, per_agent = Durations(), {agent_id: Durations() for agent_id in agent_ids}
    part = rows.split
    overall.add_histogram(
        rollups.json_totals(part.site.filter(succeeded__gt=0), "durations", version=part.version)
    )
    if agent_ids:
        for agent_id, histogram in rollups.json_totals(
            part.agents.filter(agent_id__in=agent_ids, succeeded__gt=0),
            "durations",
            by_agent=True,
            version=part.version,
        ).items():
            per_agent[agent_id].add_histogram(histogram)
    for agent_id, duration in rollups.succeeded_durations(part.raw).values_list(
        "agent_id", "duration"
    ):
        overall.add_values([duration.total_seconds()])
        if agent_id in per_agent:
            per_agent[agent_id].add_values([duration.total_seconds()])
    return overall, per_agent


def window_figures(rows: WindowRows) -> tuple[Overview, list[AgentFigures]]:
    """The window's overview and per-agent figures (busiest agents first), with the median and
    95th percentile of the successful runs' durations overall and for the TOP_AGENTS busiest.

    The overview adds up the site-wide rollups (a row per day or edge hour) and the raw rows'
    counts; the per-agent figures the agents' rollups (from the index alone on Postgres, see
    ``Rollup.Meta``) and the raw rows'. Percentiles merge the rollups' histograms with the raw
    rows' durations (ops.rollups: exact when the window is all raw rows). The site-wide rows
    keep the runs of agents deleted since; the per-agent rows go with their agent.
    """
    part = rows.split
    total = rollups.rollup_totals(part.site, fields=("succeeded", "failed", "cancelled"))
    per_agent = rollups.rollup_totals(
        part.agents_parts,
        by="agent_id",
        fields=("succeeded", "failed", "cancelled"),
        version=part.version,
    )
    for (agent_id, _hour), figures in rows.raw.items():
        total.add(figures)
        per_agent.setdefault(agent_id, rollups.Figures()).add(figures)
    overview = Overview(
        started=total.runs,
        succeeded=total.succeeded,
        failed=total.failed,
        cancelled=total.cancelled,
        active=total.active,
    )
    names = {
        a["pk"]: a
        for a in Agent.objects.filter(pk__in=per_agent).values("pk", "name", "owner__username")
    }
    agents = [
        AgentFigures(
            agent_id=agent_id,
            name=names[agent_id]["name"],
            owner=names[agent_id]["owner__username"],
            runs=f.runs,
            succeeded=f.succeeded,
            failed=f.failed,
        )
        for agent_id, f in per_agent.items()
        if agent_id in names and f.runs  # not in names: deleted since the first query
    ]
    agents.sort(key=lambda a: (-a.runs, a.agent_id))
    busiest = agents[:TOP_AGENTS]
    overall, durations = _durations(rows, [a.agent_id for a in busiest])
    overview.p50, overview.p95 = overall.percentile(0.5), overall.percentile(0.95)
    for a in busiest:
        a.p50, a.p95 = durations[a.agent_id].percentile(0.5), durations[a.agent_id].percentile(0.95)
    return overview, agents


def window_failures_by_category(rows: WindowRows) -> list[tuple[str, str, int]]:
    """(category, label, count) of the window's failed executions, most first."""
    counts: dict[str, int] = {}
    prefix = f"{Status.FAILED}:"
    categories = rollups.json_totals(rows.split.site.filter(failed__gt=0), "categories")
    for key, n in categories.items():
        if key.startswith(prefix):
            category = key.removeprefix(prefix)
            counts[category] = counts.get(category, 0) + n
    for figures in rows.raw.values():
        for (status, category), n in figures.categories.items():
            if status == Status.FAILED:
                counts[category] = counts.get(category, 0) + n
    labels = dict(Category.choices)
    ranked = sorted(((c, n) for c, n in counts.items() if n), key=lambda cn: (-cn[1], cn[0]))
    return [(c, labels.get(c, c or "Unclassified"), n) for c, n in ranked]


def window_throughput(*, window: TimeWindow, rows: WindowRows, now: datetime) -> list[Bucket]:
    """Executions per bar (by creation time) and outcome, every bar of the window present.

    Hourly bars add the hourly rollups and the raw rows' counts per hour; bars shorter than an
    hour (the last hour's minutes) count raw rows, the only ones that have minutes.
    """
    found: dict[datetime, list[int]] = {}

    def add(start: datetime, started: int, succeeded: int, failed: int) -> None:
        sums = found.setdefault(start, [0, 0, 0])
        sums[0] += started
        sums[1] += succeeded
        sums[2] += failed

    since = rows.since
    if window.bucket == HOUR:
        hours = rollups.rollup_totals(
            rows.split.site_hours, by="start", fields=("succeeded", "failed", "cancelled")
        )
        for start, f in hours.items():
            add(start, f.runs, f.succeeded, f.failed)
        for (_agent_id, start), f in rows.raw.items():
            add(start, f.runs, f.succeeded, f.failed)
    else:
        counts = {
            "started": Count("status"),
            "succeeded": Count("status", filter=Q(status=Status.SUCCEEDED)),
            "failed": Count("status", filter=Q(status=Status.FAILED)),
        }
        for row in (
            Execution.objects.filter(created_at__gte=since)
            .annotate(bucket=window.trunc("created_at", tzinfo=UTC))
            .values("bucket")
            .annotate(**counts)
            .order_by()
        ):
            # The bar this truncated unit falls in (the window starts on a bar's edge).
            start = since + (row["bucket"] - since) // window.bucket * window.bucket
            add(start, row["started"], row["succeeded"], row["failed"])
    buckets = []
    start = since
    while start <= now:
        started, ok, bad = found.get(start, (0, 0, 0))
        buckets.append(Bucket(start, ok, bad, started - ok - bad))
        start += window.bucket
    return buckets


@dataclass
class LatencyBar:
    """The start latencies (ops.backlog.start_latency) of the runs created in one bar of the
    window that have started."""

    start: datetime
    count: int = 0
    p50: float | None = None
    p95: float | None = None


def window_latency(
    *, window: TimeWindow, rows: WindowRows, now: datetime
) -> tuple[list[LatencyBar], Durations]:
    """The median and 95th percentile of the start latency per bar (by creation time, every bar
    present), and all the window's latencies together (for its own percentiles).

    Hourly bars merge the site-wide hourly rollups' latency histograms (one query) with the raw
    rows' exact latencies (one query, the rows ops.rollups.split leaves raw); minute bars read
    the last hour's rows (index ``execution_recent_status``)."""
    since = rows.since
    bars: dict[datetime, Durations] = {}
    if window.bucket == HOUR:
        hours = rows.split.site_hours.filter(latency_count__gt=0).values_list("start", "latencies")
        for start, histogram in hours:
            bars.setdefault(start, Durations()).add_histogram(histogram)
        raw = rows.split.raw
    else:
        raw = Execution.objects.filter(created_at__gte=since)
    columns = ("created_at", "not_before", "started_at")
    for created_at, not_before, started_at in rollups.started(raw).values_list(*columns):
        bar = since + (created_at - since) // window.bucket * window.bucket
        seconds = start_latency(created_at=created_at, not_before=not_before, started_at=started_at)
        bars.setdefault(bar, Durations()).add_values([seconds])
    overall = Durations()
    for durations in bars.values():
        overall.counts.update(durations.counts)
    found = []
    start = since
    while start <= now:
        durations = bars.get(start)
        if durations:
            found.append(
                LatencyBar(
                    start, len(durations), durations.percentile(0.5), durations.percentile(0.95)
                )
            )
        else:
            found.append(LatencyBar(start))
        start += window.bucket
    return found, overall


# --- Agent statistics (the agent page and the API) ---------------------------------------------


@dataclass(frozen=True)
class AgentStats:
    since: datetime
    runs: int
    succeeded: int
    failed: int
    p50: float | None
    p95: float | None

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None


def hours_back(span: timedelta, *, now: datetime) -> datetime:
    """The start of a window of ``span`` made of whole hours, the one ``now`` is in last (the
    dashboard's 24-hour and 7-day windows and the agent statistics): whole past hours are read
    from rollups, and no partial first hour from rows that retention may have deleted."""
    return rollups.floor_hour(now) + HOUR - span


def agent_stats(
    *, agent: Agent, span: timedelta = STATS_WINDOW, now: datetime | None = None
) -> AgentStats:
    """An agent's runs over the last ``span`` (:func:`hours_back`), with the median and 95th
    percentile of its successful runs' durations: its rollups of the window's whole past hours
    and its raw rows for the rest (ops.rollups.split), in five queries."""
    since = hours_back(span, now=now or timezone.now())
    part = rollups.split(since=since)
    rolled = part.agents.filter(agent=agent)
    raw = part.raw.filter(agent=agent)
    totals = _agents_totals(part, [agent.pk]).get(agent.pk, rollups.Figures())
    durations = Durations()
    durations.add_histogram(rollups.json_totals(rolled.filter(succeeded__gt=0), "durations"))
    durations.add_values(
        d.total_seconds()
        for d in rollups.succeeded_durations(raw).values_list("duration", flat=True)
    )
    return AgentStats(
        since=since,
        runs=totals.runs,
        succeeded=totals.succeeded,
        failed=totals.failed,
        p50=durations.percentile(0.5),
        p95=durations.percentile(0.95),
    )


def agents_counts(
    *, agent_ids: list[int], span: timedelta = STATS_WINDOW, now: datetime | None = None
) -> dict[int, rollups.Figures]:
    """The runs of the agents ``agent_ids`` over the last ``span`` (:func:`hours_back`, the
    window of :func:`agent_stats`) counted by status, per agent (the agents' list): their
    rollups of the window's whole past hours and their raw rows for the rest, in three queries."""
    part = rollups.split(since=hours_back(span, now=now or timezone.now()))
    return _agents_totals(part, agent_ids)


def _agents_totals(part: rollups.Split, agent_ids: list[int]) -> dict[int, rollups.Figures]:
    totals = rollups.rollup_totals(
        part.agents.filter(agent_id__in=agent_ids),
        by="agent_id",
        fields=("succeeded", "failed", "cancelled"),
    )
    raw = part.raw.filter(agent_id__in=agent_ids)
    for (agent_id, _hour), figures in rollups.count(raw, rollups.HOUR).items():
        totals.setdefault(agent_id, rollups.Figures()).add(figures)
    return totals


# --- Live state ----------------------------------------------------------------------------------


@dataclass
class LiveCounts:
    queued: int = 0
    running: int = 0
    retrying: int = 0
    next_retry_at: datetime | None = None


def live_counts() -> LiveCounts:
    """Active executions by status, through the partial index on active statuses."""
    row = Execution.objects.filter(status__in=Execution.ACTIVE_STATUSES).aggregate(
        queued=Count("status", filter=Q(status=Status.QUEUED)),
        running=Count("status", filter=Q(status=Status.RUNNING)),
        retrying=Count("status", filter=Q(status=Status.RETRYING)),
        next_retry_at=Min("next_attempt_at", filter=Q(status=Status.RETRYING)),
    )
    return LiveCounts(**row)


def running_over_timeout(*, now: datetime, limit: int = STUCK_LIMIT) -> list[Execution]:
    """Running executions whose current attempt has run longer than the agent's timeout.

    The worker stops an attempt at its time limit; one still running after it points at a
    worker that died or hangs (the reaper will finish it). Each has ``attempt_started_at``.
    A running flow (waiting for its steps) runs no attempt of its own and is left out: its
    steps are executions of their own, and its time limit is enforced by the engine.
    """
    attempt_started = ExecutionAttempt.objects.filter(
        execution_id=OuterRef("pk"), number=OuterRef("attempt")
    ).values("started_at")[:1]
    return list(
        Execution.objects.filter(status=Status.RUNNING, wait_reason=Execution.WaitReason.NONE)
        .annotate(attempt_started_at=Coalesce(Subquery(attempt_started), F("started_at")))
        .filter(RanLongerThan(F("attempt_started_at"), F("agent__timeout"), _at(now)))
        .select_related("agent", "owner")
        .order_by("attempt_started_at")[:limit]
    )


def queued_too_long(*, now: datetime, limit: int = STUCK_LIMIT) -> list[Execution]:
    """Queued executions waiting for a worker (not for their start time or an earlier run) for
    more than CONVEYOR_STUCK_QUEUED_AFTER seconds (counted from ``not_before`` for delayed
    runs)."""
    cutoff = now - timedelta(seconds=settings.CONVEYOR_STUCK_QUEUED_AFTER)
    return list(
        Execution.objects.filter(status=Status.QUEUED, wait_reason=Execution.WaitReason.BROKER)
        .filter(Q(not_before__isnull=True, created_at__lt=cutoff) | Q(not_before__lt=cutoff))
        .select_related("agent", "owner")
        .order_by("created_at")[:limit]
    )


def queue_names() -> list[str]:
    """The Celery queues Conveyor uses: the declared ones (``CONVEYOR_QUEUES``, the executions
    queue first), the maintenance and notifications queues, then any other queue an agent still
    has (saved before its queue was taken out of the settings: its runs still go there)."""
    names = [
        *settings.CONVEYOR_QUEUES,
        settings.CONVEYOR_MAINTENANCE_QUEUE,
        settings.CONVEYOR_NOTIFICATIONS_QUEUE,
    ]
    agent_queues = Agent.objects.order_by("queue").values_list("queue", flat=True).distinct()
    names += [q for q in agent_queues if q not in names]
    return list(dict.fromkeys(names))


def executions_by_task_id(task_ids: list[str]) -> dict[str, Execution]:
    """The executions behind the tasks the workers report as active (one query)."""
    if not task_ids:
        return {}
    rows = Execution.objects.filter(celery_task_id__in=task_ids).select_related("agent")
    return {e.celery_task_id: e for e in rows}


# --- Dashboard ------------------------------------------------------------------------------------


@dataclass
class Dashboard:
    window: TimeWindow
    now: datetime
    since: datetime
    overview: Overview
    agents: list[AgentFigures]
    failures: list[tuple[str, str, int]]
    throughput: list[Bucket]
    live: LiveCounts
    over_timeout: list[Execution]
    queued_long: list[Execution]
    queues: list[str] = field(default_factory=list)
    #: Each queue's backlog and time to drain now, and all queues' together (ops.backlog).
    backlog: list[QueueBacklog] = field(default_factory=list)
    backlog_total: QueueBacklog | None = None
    #: The queues' samples over the window, a point per bar.
    samples: list[SampleSeries] = field(default_factory=list)
    #: Start latency per bar, and over the whole window.
    latency: list[LatencyBar] = field(default_factory=list)
    latency_p50: float | None = None
    latency_p95: float | None = None

    @property
    def busiest_agents(self) -> list[AgentFigures]:
        return self.agents[:TOP_AGENTS]

    @property
    def failing_agents(self) -> list[AgentFigures]:
        failing = [a for a in self.agents if a.failed]
        return sorted(failing, key=lambda a: (-a.failed, -(a.failure_rate or 0), a.name))[:10]


def dashboard(*, window: TimeWindow, now: datetime) -> Dashboard:
    since = window.start(now)
    rows = window_rows(since=since)
    overview, agents = window_figures(rows)
    names = queue_names()
    queues = backlog.queue_backlog(now=now, queues=backlog.execution_queues(names))
    latency, latencies = window_latency(window=window, rows=rows, now=now)
    return Dashboard(
        window=window,
        now=now,
        since=since,
        overview=overview,
        agents=agents,
        failures=window_failures_by_category(rows),
        throughput=window_throughput(window=window, rows=rows, now=now),
        live=live_counts(),
        over_timeout=running_over_timeout(now=now),
        queued_long=queued_too_long(now=now),
        queues=names,
        backlog=queues,
        backlog_total=backlog.total(queues),
        samples=backlog.sample_series(since=since, now=now, step=window.bucket, trunc=window.trunc),
        latency=latency,
        latency_p50=latencies.percentile(0.5),
        latency_p95=latencies.percentile(0.95),
    )


# --- Metrics --------------------------------------------------------------------------------------


@dataclass
class MetricsSnapshot:
    #: (status, error_category) -> number of executions.
    by_status: dict[tuple[str, str], int]
    attempts: int
    retries: int
    #: agent id -> (name, owner, uuid, cumulative counts per DURATION_BUCKETS bound, count, sum).
    durations: dict[int, tuple[str, str, str, list[int], int, float]]
    running: int
    #: Start latencies of every run that started: cumulative counts per LATENCY_BUCKETS bound,
    #: count, sum.
    latency_le: list[int] = field(default_factory=list)
    latency_count: int = 0
    latency_sum: float = 0.0


def metrics_snapshot() -> MetricsSnapshot:
    """The figures of /metrics: totals over every execution (Prometheus wants totals, not
    windows), in nine queries whose cost does not grow with the executions table (the raw
    rows' start latencies are read one by one: the current hour's and the unsettled runs').

    The all-time rollups (ops.rollups: the site's row, and one per agent for its histogram) add
    up the settled executions of every rolled hour, the raw rows the rest (the current hour's,
    the active ones and those finished since the last roll). The site-wide counts keep the runs
    of agents deleted since, so the counters never go down.
    """
    part = rollups.split(since=None)
    site = rollups.rollup_totals(
        part.site, fields=("attempts", "retries", "latency_count", "latency_sum")
    )
    per_agent = rollups.rollup_totals(
        part.agents.filter(duration_count__gt=0),
        by="agent_id",
        fields=("duration_count", "duration_sum"),
    )
    raw = rollups.count(part.raw, rollups.HOUR)
    by_status: dict[tuple[str, str], int] = {}
    for key, n in rollups.json_totals(part.site, "categories").items():
        status, _, category = key.partition(":")
        by_status[(status, category)] = by_status.get((status, category), 0) + n
    for (agent_id, _hour), figures in raw.items():
        site.add(figures)
        per_agent.setdefault(agent_id, rollups.Figures()).add(figures)
        for pair, n in figures.categories.items():
            by_status[pair] = by_status.get(pair, 0) + n

    # A histogram per agent: the rollups' cumulative counts per bound, plus the raw rows'.
    timed = {agent_id: f for agent_id, f in per_agent.items() if f.duration_count}
    le = rollups.json_totals(part.agents.filter(duration_count__gt=0), "duration_le", by_agent=True)
    names = {
        a["pk"]: a
        for a in Agent.objects.filter(pk__in=timed).values("pk", "name", "owner__username", "uuid")
    }
    durations = {}
    for agent_id in sorted(timed):
        agent = names.get(agent_id)
        if agent is None:  # deleted between the queries
            continue
        figures = timed[agent_id]
        rolled = le.get(agent_id, {})
        cumulative = [
            n + rolled.get(rollups.bound_key(bound), 0)
            for bound, n in zip(DURATION_BUCKETS, figures.duration_le, strict=True)
        ]
        durations[agent_id] = (
            agent["name"],
            agent["owner__username"],
            str(agent["uuid"]),
            cumulative,
            figures.duration_count,
            figures.duration_sum,
        )
    running = Execution.objects.filter(status=Status.RUNNING).count()

    # Start latencies: the all-time rollup's histogram (each bucket at its representative value,
    # within 1%) and the raw rows' exact values.
    latency = Durations()
    latency.add_histogram(rollups.json_totals(part.site, "latencies"))
    raw_latencies = rollups.start_latencies(part.raw)
    latency.add_values(raw_latencies)
    latency_le = [0] * len(LATENCY_BUCKETS)
    for value, n in latency.counts.items():
        for i, bound in enumerate(LATENCY_BUCKETS):
            if value <= bound:
                latency_le[i] += n
    return MetricsSnapshot(
        {pair: n for pair, n in by_status.items() if n},
        site.attempts,
        site.retries,
        durations,
        running,
        latency_le=latency_le,
        latency_count=site.latency_count + len(raw_latencies),
        latency_sum=site.latency_sum + sum(raw_latencies),
    )


# --- Capacity: concurrency limits in use, open circuit breakers -----------------------------------

#: Agents with a concurrency limit the capacity panel lists (the busiest first).
CAPACITY_AGENTS = 12


@dataclass
class SlotUse:
    """A concurrency limit and its use now: an agent's or a queue's."""

    key: str
    name: str
    limit: int
    running: int = 0
    waiting: int = 0
    #: An agent's: the agent (with its owner); a queue's: its description.
    agent: Agent | None = None
    description: str = ""

    @property
    def full(self) -> bool:
        return self.running >= self.limit

    @property
    def waiting_url(self) -> str:
        return admin_executions_url(waits_on=self.key, wait_reason__exact=Execution.WaitReason.SLOT)


@dataclass
class BreakerRow:
    """An open or half-open circuit breaker (a ``Limiter`` row not closed)."""

    limiter: Limiter
    scope: str
    #: The agent's name or the host.
    name: str
    agent: Agent | None = None
    #: Runs waiting for it to close.
    waiting: int = 0

    @property
    def key(self) -> str:
        return self.limiter.key

    @property
    def waiting_url(self) -> str:
        return admin_executions_url(
            waits_on=self.key, wait_reason__exact=Execution.WaitReason.CIRCUIT
        )


@dataclass
class Capacity:
    agents: list[SlotUse]
    #: Agents with a limit beyond those listed.
    more_agents: int
    queues: list[SlotUse]
    breakers: list[BreakerRow]


def capacity() -> Capacity:
    """The capacity panel: agents and queues with a concurrency limit, each with its runs
    holding a slot and its runs waiting for one, and every open or half-open circuit breaker
    (an agent's or a destination host's) with the runs waiting for it.

    Four queries whatever the number of rows: the breakers (partial index
    ``limiter_not_closed``), the agents with a limit or a breaker open, the running executions
    by agent and queue (partial index ``execution_active``), the waiting ones by the limit they
    wait on (partial index ``execution_waits_on``). Slots are counted as
    ``executions.selectors.slot_holders`` counts them (a flow waiting for its steps holds no
    queue slot).
    """
    limiters = list(
        Limiter.objects.exclude(state=Limiter.State.CLOSED).order_by("opened_at", "key")
    )
    breaker_agents = []
    for limiter in limiters:
        scope, _, name = limiter.key.partition(":")
        if scope == "agent":
            with contextlib.suppress(ValueError):
                breaker_agents.append(uuid_lib.UUID(name))
    agents = list(
        Agent.objects.filter(Q(max_concurrency__isnull=False) | Q(uuid__in=breaker_agents))
        .select_related("owner")
        .order_by("name", "pk")
    )
    running_by_agent: dict[int, int] = {}
    running_by_queue: dict[str, int] = {}
    for agent_id, queue, reason, n in (
        Execution.objects.filter(status=Status.RUNNING)
        .order_by()
        .values_list("agent_id", "agent__queue", "wait_reason")
        .annotate(n=Count("pk"))
    ):
        running_by_agent[agent_id] = running_by_agent.get(agent_id, 0) + n
        if reason == Execution.WaitReason.NONE:
            running_by_queue[queue] = running_by_queue.get(queue, 0) + n
    waiting: dict[tuple[str, str], int] = {
        (key, reason): n
        for key, reason, n in Execution.objects.filter(
            status__in=Execution.ACTIVE_STATUSES, waits_on__gt=""
        )
        .order_by()
        .values_list("waits_on", "wait_reason")
        .annotate(n=Count("pk"))
    }
    slot = Execution.WaitReason.SLOT

    limited = []
    for agent in agents:
        if agent.max_concurrency is None:
            continue
        key = f"agent:{agent.uuid}"
        limited.append(
            SlotUse(
                key=key,
                name=agent.name,
                limit=agent.max_concurrency,
                running=running_by_agent.get(agent.pk, 0),
                waiting=waiting.get((key, slot), 0),
                agent=agent,
            )
        )
    limited.sort(key=lambda u: (-u.running - u.waiting, -u.waiting, u.name.lower(), u.key))
    queues = [
        SlotUse(
            key=f"queue:{name}",
            name=name,
            limit=options["concurrency"],
            running=running_by_queue.get(name, 0),
            waiting=waiting.get((f"queue:{name}", slot), 0),
            description=options.get("description", ""),
        )
        for name, options in settings.CONVEYOR_QUEUES.items()
        if (options or {}).get("concurrency")
    ]
    by_uuid = {str(agent.uuid): agent for agent in agents}
    breakers = []
    for limiter in limiters:
        scope, _, name = limiter.key.partition(":")
        agent = by_uuid.get(name) if scope == "agent" else None
        breakers.append(
            BreakerRow(
                limiter=limiter,
                scope=scope,
                name=agent.name if agent is not None else name,
                agent=agent,
                waiting=waiting.get((limiter.key, Execution.WaitReason.CIRCUIT), 0),
            )
        )
    return Capacity(
        agents=limited[:CAPACITY_AGENTS],
        more_agents=max(0, len(limited) - CAPACITY_AGENTS),
        queues=queues,
        breakers=breakers,
    )
