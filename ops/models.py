"""Rollups: what the read side keeps of executions once their rows are gone (ops.rollups).

One :class:`Rollup` row per agent, period and period start, and one per period and start for
the whole site (``agent`` empty), counting the executions *created* in the period that have
finished (see ops.rollups for which ones and when). Periods are UTC hours, UTC days, and all
time (one row per agent and one for the site, added to as periods are rolled). The dashboard,
/metrics, the agent page and the API's stats add them up for whole past periods and read raw
rows only for the rest, so their figures outlive retention (executions.retention) and their
cost does not grow with the executions table.

An agent's own rollups are deleted with it (cascade): its page and its /metrics series go with
it, as its executions do. The site-wide rows stay: the dashboard's totals and /metrics'
counters keep its history (a Prometheus counter must never go down), and they are one row per
period to read, whatever the number of agents.
"""

from django.db import models


class Rollup(models.Model):
    class Period(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"
        ALL = "all", "All time"

    # Empty: the whole site's row for the period.
    agent = models.ForeignKey(
        "agents.Agent", null=True, blank=True, on_delete=models.CASCADE, related_name="rollups"
    )
    period = models.CharField(max_length=4, choices=Period.choices)
    # The period's first instant (UTC, on the hour or at midnight; all time: 1970-01-01).
    start = models.DateTimeField()
    # Executions by final status.
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    # Executions by final status and error category: {"failed:timeout": 3, "succeeded:": 40}
    # (an empty category after the colon: none). /metrics reports them by both.
    categories = models.JSONField(default=dict, blank=True)
    # Attempts started, and those beyond each execution's first (automatic retries).
    attempts = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    # Durations of the successful runs, in seconds (what the dashboard and the agent page show):
    # the period's median and 95th percentile, and a histogram of them that rollups of several
    # periods merge into percentiles of the whole (ops.rollups.histogram_key, ~1% precision).
    p50 = models.FloatField(null=True, blank=True)
    p95 = models.FloatField(null=True, blank=True)
    durations = models.JSONField(default=dict, blank=True)
    # Durations of every finished run that has one (what /metrics shows): how many, their sum in
    # seconds (with the count, the average), and how many took at most each bound of
    # ops.rollups.DURATION_BUCKETS ({"0.1": 2, "0.5": 7, ...}, cumulative like Prometheus').
    duration_count = models.PositiveIntegerField(default=0)
    duration_sum = models.FloatField(default=0.0)
    duration_le = models.JSONField(default=dict, blank=True)
    # Start latency of every run that started (ops.backlog.start_latency: from the time it could
    # start, its creation or its delayed start, to its first attempt's start): how many, their
    # sum in seconds, and a histogram of them as ``durations`` (merged into percentiles of
    # several periods; /metrics' buckets are read from it, ~1% precision).
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum = models.FloatField(default=0.0)
    latencies = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "period", "start"], name="rollup_one_per_agent_period"
            ),
            models.UniqueConstraint(
                fields=["period", "start"],
                condition=models.Q(agent__isnull=True),
                name="rollup_one_site_wide_per_period",
            ),
        ]
        indexes = [
            # The dashboard's per-agent table: every agent's counts over a window's periods,
            # from the index alone on Postgres. (The site-wide rows: the partial unique index;
            # the agent page and the API's stats: the agent's unique index.)
            models.Index(
                fields=["period", "start"],
                include=["agent", "succeeded", "failed", "cancelled"],
                name="rollup_period_start",
            ),
        ]

    def __str__(self):
        return f"{self.agent_id or 'site'} {self.period} {self.start:%Y-%m-%d %H:%M}"

    @property
    def runs(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class RollupCursor(models.Model):
    """How far ``ops.rollups.roll_up`` has gone (one row, pk 1): what it writes next and what
    the readers may take from rollups.

    * ``hours_until``: every hour before it has its rollups, and so has every day that ends by it.
    * ``settled_before``: the rollups count every execution of those periods that finished
      before it; the rest (still active, or finished since) is read from raw rows.
    """

    # None until the first roll.
    hours_until = models.DateTimeField(null=True)
    settled_before = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"rolled until {self.hours_until}"


class QueueSample(models.Model):
    """What waited in one queue at one minute: written once a minute by the beat entry
    ``conveyor-queue-samples`` (ops.backlog.sample), so the dashboard can draw the backlog over
    time. One row per queue and minute (a second sample of the same minute changes nothing);
    rows older than ops.backlog.SAMPLES_KEPT are deleted as new ones are written."""

    # The minute sampled (UTC, on the minute).
    at = models.DateTimeField()
    queue = models.CharField(max_length=100)
    # Runs ready to start that no worker has started (ops.backlog.waiting_for_a_worker).
    queued = models.PositiveIntegerField(default=0)
    # Seconds the oldest of them had waited; None: none waited.
    oldest_age = models.FloatField(null=True, blank=True)
    # Runs of the queue running (on a worker).
    running = models.PositiveIntegerField(default=0)
    # Messages in the broker's list for the queue; None: the broker did not answer.
    broker = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            # Also the index of the dashboard's window (``at`` first) and of the clean-up.
            models.UniqueConstraint(fields=["at", "queue"], name="queue_sample_one_per_minute"),
        ]

    def __str__(self):
        return f"{self.queue} {self.at:%Y-%m-%d %H:%M}: {self.queued} queued"


class Regression(models.Model):
    """An agent doing worse than its usual (ops.baseline): its last day against the 14 days
    before, beyond the thresholds its owner set. Open while ``ended_at`` is empty; at most one
    open per agent (the constraint is the compare-and-set: only the check that inserts it tells
    the owner). A row per regression, kept once closed, as its history."""

    class What(models.TextChoices):
        P95 = "p95", "Slower than usual"
        SUCCESS = "success", "Succeeds less than usual"

    class EndReason(models.TextChoices):
        RECOVERED = "recovered", "Back to its usual"
        TOO_FEW_RUNS = "too_few_runs", "Not enough runs to compare any more"
        NOT_WATCHED = "not_watched", "No longer watched"

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="regressions")
    what = models.CharField(max_length=10, choices=What.choices)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)
    # The figures when it started: the last day's value and its usual one (seconds for p95, a
    # fraction 0..1 for success), and the runs each counted.
    last_value = models.FloatField()
    usual_value = models.FloatField()
    last_runs = models.PositiveIntegerField()
    usual_runs = models.PositiveIntegerField()
    # The threshold in force then (percent or points).
    threshold = models.PositiveSmallIntegerField()
    # The run the notification was sent with (a delivery belongs to a run): the agent's latest
    # finished run of the last day.
    execution = models.ForeignKey(
        "executions.Execution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"],
                condition=models.Q(ended_at__isnull=True),
                name="regression_one_open_per_agent",
            ),
        ]

    def __str__(self):
        return f"{self.agent_id} {self.what} since {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None
