"""Read-side queries of the operations dashboard and of /metrics.

Everything is aggregated in the database: conditional counts, GROUP BY and, on Postgres,
``percentile_cont``. Python only shapes the aggregated rows (one per agent, category or time
bucket), never execution rows, and every function runs a fixed number of queries whatever the
size of the executions table (tests/ops/test_dashboard.py counts them).

Counts are ``COUNT(status)`` (never NULL, so the same as ``COUNT(*)``, which Django does not
allow with a filter), not ``COUNT(id)``: when a query references only ``created_at`` and
``status``, Postgres answers it from the index alone without reading the table.

Indexes used (see ``Execution.Meta.indexes``):

* ``execution_recent_status`` (created_at, status): everything about a time window (counts,
  throughput, per-agent figures, failures by category) starts from ``created_at >= since``.
  Windows are on creation time, so a figure and the admin list it links to agree.
* ``execution_active`` (partial, active statuses): live counts and stuck executions.
* /metrics reports totals, not windows: it reads the whole table (see ``metrics_snapshot``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db import connection, transaction
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
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber, TruncHour, TruncMinute
from django.urls import reverse

from agents.models import Agent
from executions.errors import Category
from executions.models import Execution, ExecutionAttempt
from executions.selectors import percentile

Status = Execution.Status

# SQLite has no percentile_cont: percentiles come from the most recent runs, at most this many
# overall and per agent.
SAMPLE_OVERALL = 2000
SAMPLE_PER_AGENT = 200
# Rows in the dashboard's tables.
TOP_AGENTS = 12
STUCK_LIMIT = 20
# Histogram buckets of /metrics, in seconds (Prometheus' "le" bounds; +Inf is added).
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


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


def admin_executions_url(**params) -> str:
    """The execution changelist filtered by ``params`` (Django lookups, as the admin reads them)."""
    query = {}
    for key, value in params.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(microsecond=0).isoformat()
        elif isinstance(value, timedelta):
            value = str(value)
        query[key] = value
    url = reverse("admin:executions_execution_changelist")
    return f"{url}?{urlencode(query)}" if query else url


# --- Time windows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeWindow:
    key: str
    label: str
    span: timedelta
    #: Width of one bar of the throughput chart, and the SQL truncation its bars are added up
    #: from (a bar may hold several truncated units: five minutes of a day).
    bucket: timedelta
    trunc: type
    #: Width of one clickable slice of the chart (several bars when bars are minutes of a day).
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
        # key, label, span, width of a bar and its SQL truncation, width of a clickable slice;
        # about 60 to 300 bars a window.
        TimeWindow("1h", "Last hour", HOUR, MINUTE, TruncMinute, MINUTE),
        TimeWindow("24h", "Last 24 hours", DAY, 5 * MINUTE, TruncMinute, HOUR),
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

    @classmethod
    def from_row(cls, row: dict, p50: float | None = None, p95: float | None = None) -> Overview:
        return cls(**{name: row[name] for name in WINDOW_COUNTS}, p50=p50, p95=p95)


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

    @classmethod
    def from_row(
        cls, row: dict, p50: float | None = None, p95: float | None = None
    ) -> AgentFigures:
        """From a row of per-agent counts with the agent's ``agent_name`` and ``owner_name``."""
        return cls(
            agent_id=row["agent_id"],
            name=row["agent_name"],
            owner=row["owner_name"],
            runs=row["started"],
            succeeded=row["succeeded"],
            failed=row["failed"],
            p50=p50,
            p95=p95,
        )


@dataclass
class Bucket:
    start: datetime
    succeeded: int = 0
    failed: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.other


# The window's counts by outcome (the Postgres query of window_figures counts the same).
WINDOW_COUNTS = {
    "started": None,
    "succeeded": Q(status=Status.SUCCEEDED),
    "failed": Q(status=Status.FAILED),
    "cancelled": Q(status=Status.CANCELLED),
    "active": Q(status__in=Execution.ACTIVE_STATUSES),
}


def _counts(*names: str) -> dict[str, Count]:
    """``COUNT(status)`` with the filters of WINDOW_COUNTS named, for aggregate or annotate."""
    return {name: Count("status", filter=WINDOW_COUNTS[name]) for name in names}


def _sqlite_overview(*, since: datetime) -> Overview:
    """SQLite: the window's counts, and p50/p95 from its latest successful runs."""
    recent = Execution.objects.filter(created_at__gte=since)
    row = recent.aggregate(**_counts(*WINDOW_COUNTS))
    sample = sorted(
        d.total_seconds()
        for d in recent.filter(status=Status.SUCCEEDED, duration__isnull=False)
        .order_by("-created_at")
        .values_list("duration", flat=True)[:SAMPLE_OVERALL]
    )
    return Overview.from_row(row, percentile(sample, 0.5), percentile(sample, 0.95))


def _sqlite_agents(*, since: datetime) -> list[AgentFigures]:
    """SQLite: per-agent counts in one GROUP BY, percentiles of the busiest from a sample."""
    recent = Execution.objects.filter(created_at__gte=since)
    rows = (
        recent.values(
            "agent_id", agent_name=F("agent__name"), owner_name=F("agent__owner__username")
        )
        .annotate(**_counts("started", "succeeded", "failed"))
        .order_by("-started", "agent_id")
    )
    figures = [AgentFigures.from_row(row) for row in rows]
    if figures:
        _sample_agent_percentiles(recent, figures[:TOP_AGENTS])
    return figures


def _sample_agent_percentiles(recent, figures: list[AgentFigures]) -> None:
    """SQLite: p50/p95 per agent from each agent's latest SAMPLE_PER_AGENT successful runs."""
    by_id = {f.agent_id: f for f in figures}
    sample = (
        recent.filter(agent_id__in=by_id, status=Status.SUCCEEDED, duration__isnull=False)
        .annotate(
            row=Window(RowNumber(), partition_by=[F("agent_id")], order_by=F("created_at").desc())
        )
        .filter(row__lte=SAMPLE_PER_AGENT)
        .order_by("agent_id", "duration")
        .values_list("agent_id", "duration")
    )
    durations: dict[int, list[float]] = {}
    for agent_id, duration in sample:
        durations.setdefault(agent_id, []).append(duration.total_seconds())
    for agent_id, values in durations.items():
        by_id[agent_id].p50 = percentile(values, 0.5)
        by_id[agent_id].p95 = percentile(values, 0.95)


def window_figures(*, since: datetime) -> tuple[Overview, list[AgentFigures]]:
    """The window's overview and per-agent figures (busiest agents first).

    On Postgres one scan answers both, with exact percentiles (``percentile_cont``):
    ``GROUP BY GROUPING SETS ((agent_id), ())`` adds the all-agents row to the per-agent rows,
    so the window's rows are read and sorted once (the largest cost of the page for a 7-day
    window of a big table). SQLite has no percentile_cont: it samples the latest runs.
    """
    if not is_postgres():
        return _sqlite_overview(since=since), _sqlite_agents(since=since)
    execution = Execution._meta.db_table
    agent = Agent._meta.db_table
    user = Agent._meta.get_field("owner").related_model._meta.db_table
    sql = f"""
        SELECT s.*, a.name AS agent_name, u.username AS owner_name FROM (
            SELECT e.agent_id,
                   COUNT(e.status) AS started,
                   COUNT(e.status) FILTER (WHERE e.status = %(succeeded)s) AS succeeded,
                   COUNT(e.status) FILTER (WHERE e.status = %(failed)s) AS failed,
                   COUNT(e.status) FILTER (WHERE e.status = %(cancelled)s) AS cancelled,
                   COUNT(e.status) FILTER (WHERE e.status = ANY(%(active)s)) AS active,
                   percentile_cont(ARRAY[0.5, 0.95]::float8[])
                       WITHIN GROUP (ORDER BY date_part('epoch', e.duration))
                       FILTER (WHERE e.status = %(succeeded)s AND e.duration IS NOT NULL)
                       AS pcts
            FROM {execution} e
            WHERE e.created_at >= %(since)s
            GROUP BY GROUPING SETS ((e.agent_id), ())
        ) s
        LEFT JOIN {agent} a ON a.id = s.agent_id
        LEFT JOIN {user} u ON u.id = a.owner_id
        ORDER BY s.started DESC, s.agent_id
    """  # noqa: S608 - table names from the models, values as parameters
    params = {
        "succeeded": Status.SUCCEEDED,
        "failed": Status.FAILED,
        "cancelled": Status.CANCELLED,
        "active": [str(s) for s in Execution.ACTIVE_STATUSES],
        "since": since,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        # A week of a busy installation is a few hundred thousand rows to sort: in memory
        # rather than in temporary files (the default work_mem is 4 MB). For this query only.
        cursor.execute("SET LOCAL work_mem = '32MB'")
        cursor.execute(sql, params)
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    overview, agents = Overview(), []
    for row in rows:
        p50, p95 = row["pcts"] or (None, None)
        if row["agent_id"] is None:
            overview = Overview.from_row(row, p50, p95)
        else:
            agents.append(AgentFigures.from_row(row, p50, p95))
    return overview, agents


def window_failures_by_category(*, since: datetime) -> list[tuple[str, str, int]]:
    """(category, label, count) of the failed executions created since ``since``, most first."""
    rows = (
        Execution.objects.filter(created_at__gte=since, status=Status.FAILED)
        .values_list("error_category")
        .annotate(n=Count("status"))
        .order_by("-n", "error_category")
    )
    labels = dict(Category.choices)
    return [(c, labels.get(c, c or "Unclassified"), n) for c, n in rows]


def window_throughput(*, window: TimeWindow, since: datetime, now: datetime) -> list[Bucket]:
    """Executions per bucket (by creation time) and outcome, every bucket of the window present."""
    rows = (
        Execution.objects.filter(created_at__gte=since)
        .annotate(bucket=window.trunc("created_at", tzinfo=UTC))
        .values("bucket")
        .annotate(**_counts("started", "succeeded", "failed"))
        .order_by("bucket")
    )
    found: dict[datetime, list[int]] = {}
    for row in rows:
        # The bar this truncated unit falls in (the window starts on a bar's edge).
        start = since + (row["bucket"] - since) // window.bucket * window.bucket
        sums = found.setdefault(start, [0, 0, 0])
        sums[0] += row["started"]
        sums[1] += row["succeeded"]
        sums[2] += row["failed"]
    buckets = []
    start = since
    while start <= now:
        started, ok, bad = found.get(start, (0, 0, 0))
        buckets.append(Bucket(start, ok, bad, started - ok - bad))
        start += window.bucket
    return buckets


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
    """The Celery queues Conveyor uses: the two from the settings and every agent's queue."""
    names = [settings.CONVEYOR_EXECUTIONS_QUEUE, settings.CONVEYOR_MAINTENANCE_QUEUE]
    agent_queues = Agent.objects.order_by("queue").values_list("queue", flat=True).distinct()
    return names + [q for q in agent_queues if q not in names]


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

    @property
    def busiest_agents(self) -> list[AgentFigures]:
        return self.agents[:TOP_AGENTS]

    @property
    def failing_agents(self) -> list[AgentFigures]:
        failing = [a for a in self.agents if a.failed]
        return sorted(failing, key=lambda a: (-a.failed, -(a.failure_rate or 0), a.name))[:10]


def dashboard(*, window: TimeWindow, now: datetime) -> Dashboard:
    since = window.start(now)
    overview, agents = window_figures(since=since)
    return Dashboard(
        window=window,
        now=now,
        since=since,
        overview=overview,
        agents=agents,
        failures=window_failures_by_category(since=since),
        throughput=window_throughput(window=window, since=since, now=now),
        live=live_counts(),
        over_timeout=running_over_timeout(now=now),
        queued_long=queued_too_long(now=now),
        queues=queue_names(),
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


def metrics_snapshot() -> MetricsSnapshot:
    """The figures of /metrics, in four queries.

    The first two read every execution (Prometheus wants totals, not windows): on a table of
    millions of rows they cost a sequential scan each, once per scrape.
    """
    by_status: dict[tuple[str, str], int] = {}
    attempts = retries = 0
    for status, category, n, n_attempts, n_retries in (
        Execution.objects.values_list("status", "error_category")
        .annotate(
            n=Count("status"),
            attempts=Sum("attempt"),
            retries=Sum(F("attempt") - 1, filter=Q(attempt__gt=1)),
        )
        .order_by()
    ):
        by_status[(status, category)] = n
        attempts += n_attempts or 0
        retries += n_retries or 0

    # A histogram per agent: one conditional count per bucket bound, in one GROUP BY on the
    # agent id alone (a hash aggregate; grouping by the joined names too would sort the table).
    finished = Q(duration__isnull=False)
    bounds = {
        f"le_{i}": Count("duration", filter=Q(duration__lte=timedelta(seconds=b)))
        for i, b in enumerate(DURATION_BUCKETS)
    }
    rows = list(
        Execution.objects.filter(finished)
        .values("agent_id")
        .annotate(n=Count("duration"), total=Sum("duration"), **bounds)
        .order_by()
    )
    names = {
        a["pk"]: a
        for a in Agent.objects.filter(pk__in=[r["agent_id"] for r in rows]).values(
            "pk", "name", "owner__username", "uuid"
        )
    }
    durations = {}
    for row in sorted(rows, key=lambda r: r["agent_id"]):
        agent = names.get(row["agent_id"])
        if agent is None:  # deleted between the two queries
            continue
        cumulative = [row[f"le_{i}"] for i in range(len(DURATION_BUCKETS))]
        total = row["total"].total_seconds() if row["total"] is not None else 0.0
        durations[row["agent_id"]] = (
            agent["name"],
            agent["owner__username"],
            str(agent["uuid"]),
            cumulative,
            row["n"],
            total,
        )
    running = Execution.objects.filter(status=Status.RUNNING).count()
    return MetricsSnapshot(by_status, attempts, retries, durations, running)
