"""Read-side queries for the pages: stats, overviews and keyset-paginated lists.

Each function runs a fixed number of queries whatever the number of rows (the list pages'
tests assert it).
"""

from __future__ import annotations

import base64
import binascii
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F, OuterRef, Q, Subquery, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.models import Agent

from .models import Execution

Status = Execution.Status
STATS_WINDOW = timedelta(days=7)
# Percentiles are taken over at most this many recent finished runs.
DURATION_SAMPLE = 1000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no values."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True)
class AgentStats:
    runs: int
    succeeded: int
    failed: int
    p50: float | None
    p95: float | None

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.failed
        return self.succeeded / finished if finished else None


def agent_stats(*, agent: Agent, since: datetime | None = None) -> AgentStats:
    since = since or timezone.now() - STATS_WINDOW
    recent = Execution.objects.filter(agent=agent, created_at__gte=since)
    counts = recent.aggregate(
        runs=Count("id"),
        succeeded=Count("id", filter=Q(status=Status.SUCCEEDED)),
        failed=Count("id", filter=Q(status=Status.FAILED)),
    )
    durations = sorted(
        d.total_seconds()
        for d in recent.filter(status=Status.SUCCEEDED, duration__isnull=False)
        .order_by("-created_at")
        .values_list("duration", flat=True)[:DURATION_SAMPLE]
    )
    return AgentStats(**counts, p50=percentile(durations, 0.5), p95=percentile(durations, 0.95))


def agent_median_duration(*, agent_id: int) -> float | None:
    """The median of the agent's last 50 successful runs, for "about 20 s left"."""
    durations = sorted(
        d.total_seconds()
        for d in Execution.objects.filter(
            agent_id=agent_id, status=Status.SUCCEEDED, duration__isnull=False
        )
        .order_by("-created_at")
        .values_list("duration", flat=True)[:50]
    )
    return percentile(durations, 0.5)


def agents_overview(*, owner, since: datetime | None = None, spark: int = 20) -> list[Agent]:
    """The owner's agents with last status, 7-day counts and the statuses of recent runs.

    Three queries whatever the number of rows, each reading only the window through the
    owner's (owner, created_at) index: the agents with their last run, the counts by agent and
    status, and the last ``spark`` runs of every agent (a window function per agent).
    """
    since = since or timezone.now() - STATS_WINDOW
    last = Execution.objects.filter(agent=OuterRef("pk")).order_by("-created_at", "-id")
    agents = list(
        Agent.objects.filter(owner=owner)
        .annotate(
            last_status=Subquery(last.values("status")[:1]),
            last_run_at=Subquery(last.values("created_at")[:1]),
            # A delayed last run says when it starts, as recorded (wait_reason, wait_until).
            last_wait_reason=Subquery(last.values("wait_reason")[:1]),
            last_wait_until=Subquery(last.values("wait_until")[:1]),
        )
        .order_by("name")
    )
    counts: dict[tuple[int, str], int] = {}
    if agents:
        grouped = (
            Execution.objects.filter(owner=owner, created_at__gte=since)
            .order_by()
            .values_list("agent_id", "status")
            .annotate(n=Count("status"))
        )
        counts = {(agent_id, status): n for agent_id, status, n in grouped}
    sparks: dict[int, list[str]] = {agent.pk: [] for agent in agents}
    if agents:
        recent = (
            Execution.objects.filter(owner=owner, created_at__gte=since)
            .annotate(
                row=Window(
                    RowNumber(),
                    partition_by=[F("agent_id")],
                    order_by=[F("created_at").desc(), F("id").desc()],
                )
            )
            .filter(row__lte=spark)
            .values_list("agent_id", "status", "row")
        )
        for agent_id, status, _row in sorted(recent, key=lambda r: (r[0], -r[2])):
            sparks.setdefault(agent_id, []).append(status)
    for agent in agents:
        agent.succeeded_window = counts.get((agent.pk, Status.SUCCEEDED), 0)
        agent.failed_window = counts.get((agent.pk, Status.FAILED), 0)
        agent.runs_window = sum(n for (a, _), n in counts.items() if a == agent.pk)
        finished = agent.succeeded_window + agent.failed_window
        agent.success_rate = agent.succeeded_window / finished if finished else None
        agent.spark = sparks.get(agent.pk, [])
    return agents


# --- Search ----------------------------------------------------------------------------------

# A search this long or longer that is only hex digits (and dashes) may be the start of an id.
ID_PREFIX_MIN = 4


def executions_search(queryset, *, text: str):
    """The executions whose public id is ``text`` (whole, or its first characters as shown in
    an address) or whose agent name, error or progress message contains it.

    One condition on the same query, so the list keeps its query count and keyset pages."""
    text = text.strip()
    if not text:
        return queryset
    match = (
        Q(agent__name__icontains=text)
        | Q(error_title__icontains=text)
        | Q(error_message__icontains=text)
        | Q(progress_message__icontains=text)
    )
    try:
        match |= Q(uuid=uuid.UUID(text))
    except ValueError:
        digits = text.replace("-", "")
        if len(digits) >= ID_PREFIX_MIN and all(c in string.hexdigits for c in digits):
            match |= Q(uuid__startswith=text.lower())
    return queryset.filter(match)


# --- Keyset pagination ---------------------------------------------------------------------


def encode_cursor(execution: Execution) -> str:
    raw = f"{execution.created_at.isoformat()}|{execution.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, pk = raw.split("|")
        created = parse_datetime(stamp)
        if created is None:
            return None
        return created, int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def executions_page(*, queryset, cursor: str | None, per_page: int = 50):
    """One page, newest first, after ``cursor``; returns (rows, next_cursor or None).

    Keyset on (created_at, id): as fast on the last page as on the first.
    """
    qs = queryset.order_by("-created_at", "-id")
    position = decode_cursor(cursor) if cursor else None
    if position is not None:
        created, pk = position
        qs = qs.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=pk))
    rows = list(qs[: per_page + 1])
    next_cursor = encode_cursor(rows[per_page - 1]) if len(rows) > per_page else None
    return rows[:per_page], next_cursor


# --- Waiting runs (read by the schedules' slot dispatch and the recovery passes alike) ---------


def runs_in_the_way(*, at: datetime):
    """Active runs that a new run of the same agent would overlap: running, retrying, or queued
    for any reason but a delay whose time has not come yet."""
    return Execution.objects.filter(status__in=Execution.ACTIVE_STATUSES).exclude(
        wait_reason=Execution.WaitReason.DELAYED, wait_until__gt=at
    )


def held_runs(*, schedule):
    """A schedule's executions held by the ``queue`` overlap policy."""
    return Execution.objects.filter(
        schedule=schedule, status=Status.QUEUED, wait_reason=Execution.WaitReason.HELD
    )
