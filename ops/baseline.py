"""Each agent against its own usual: its last day against the 14 days before it.

Windows
-------
The *last day* is the window of the agent page's statistics (ops.selectors.hours_back: from
the hour that began 23 hours before the current one, to now); its *usual* is the 14 days before
that (whole hours, so both are read from rollups plus raw rows, ops.rollups.split). For each:
the runs finished (succeeded or failed: a cancelled run says nothing of the agent), the share
that succeeded, and the median and 95th percentile of the successful runs' durations.

Comparing (pure functions: :func:`compare_p95`, :func:`compare_success`)
------------------------------------------------------------------------
* durations: worse when the last day's p95 is above the usual p95 * (1 + percent/100);
* success: worse when the last day's share of successes is below the usual one - points/100.

Each is judged only when both windows have at least ``regression_min_runs`` runs that count
(successful runs for durations, finished runs for the share); otherwise its state says "not
enough runs". A figure whose threshold is empty is not watched.

Regressions (:func:`check`, every 5 minutes on the maintenance queue)
---------------------------------------------------------------------
1. Figures for every agent that ran in the two windows or has an open regression, in one set
   of queries whatever their number.
2. An agent with no open regression that is worse gets one: the insert is guarded by the
   constraint "one open per agent", so of two checks at once only the one that inserted it
   records the ``agent.regressed`` delivery on the agent's channels (whatever ``notify_on``
   says, like a circuit breaker opening), sent once the transaction commits.
3. An open regression closes when every watched figure is back within *half* its threshold
   (hysteresis: a figure hovering at the threshold does not open and close it again and again),
   or when the figure it is about no longer has enough runs to compare, or is no longer watched.
   It does not notify; the next regression does, again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from executions.models import Execution

from . import rollups
from .models import Regression
from .rollups import Durations, floor_hour

logger = logging.getLogger("conveyor.ops")

LAST_DAY = timedelta(days=1)
USUAL = timedelta(days=14)

OK, WORSE, TOO_FEW, NOT_WATCHED = "ok", "worse", "not enough runs", "not watched"


@dataclass(frozen=True)
class Window:
    """What one window says of an agent."""

    since: datetime
    until: datetime | None
    #: Runs finished (succeeded or failed).
    runs: int = 0
    succeeded: int = 0
    #: Successful runs with a duration (those the percentiles are of).
    timed: int = 0
    p50: float | None = None
    p95: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.runs if self.runs else None


@dataclass(frozen=True)
class Comparison:
    """One figure of the last day against its usual."""

    what: str  # "p95" or "success"
    state: str  # OK, WORSE, TOO_FEW or NOT_WATCHED
    last: float | None
    usual: float | None
    #: Runs that count for it, in each window, and how many each needs.
    last_runs: int
    usual_runs: int
    needed: int
    #: Percent (p95) or points (success); None: not watched.
    threshold: int | None
    #: Back within half the threshold (an open regression may close).
    recovered: bool = True

    @property
    def worse(self) -> bool:
        return self.state == WORSE

    @property
    def have(self) -> int:
        """The runs of the window that has fewer (what "N of M needed" counts)."""
        return min(self.last_runs, self.usual_runs)


def compare_p95(last: Window, usual: Window, *, percent: int | None, min_runs: int) -> Comparison:
    base = dict(
        what=Regression.What.P95.value,
        last=last.p95,
        usual=usual.p95,
        last_runs=last.timed,
        usual_runs=usual.timed,
        needed=min_runs,
        threshold=percent,
    )
    if percent is None:
        return Comparison(state=NOT_WATCHED, **base)
    if min(last.timed, usual.timed) < min_runs or last.p95 is None or usual.p95 is None:
        return Comparison(state=TOO_FEW, **base)
    worse = last.p95 > usual.p95 * (1 + percent / 100)
    recovered = last.p95 <= usual.p95 * (1 + percent / 200)
    return Comparison(state=WORSE if worse else OK, recovered=recovered, **base)


def compare_success(
    last: Window, usual: Window, *, points: int | None, min_runs: int
) -> Comparison:
    base = dict(
        what=Regression.What.SUCCESS.value,
        last=last.success_rate,
        usual=usual.success_rate,
        last_runs=last.runs,
        usual_runs=usual.runs,
        needed=min_runs,
        threshold=points,
    )
    if points is None:
        return Comparison(state=NOT_WATCHED, **base)
    if min(last.runs, usual.runs) < min_runs:
        return Comparison(state=TOO_FEW, **base)
    worse = last.success_rate < usual.success_rate - points / 100
    recovered = last.success_rate >= usual.success_rate - points / 200
    return Comparison(state=WORSE if worse else OK, recovered=recovered, **base)


@dataclass(frozen=True)
class AgainstUsual:
    """An agent's last day against its usual: both windows, both comparisons, and its open
    regression if any."""

    last: Window
    usual: Window
    p95: Comparison
    success: Comparison
    regression: Regression | None = None

    @property
    def comparisons(self) -> tuple[Comparison, Comparison]:
        return (self.p95, self.success)

    @property
    def state(self) -> str:
        """WORSE if a figure is, OK if one was judged, else TOO_FEW (or NOT_WATCHED)."""
        states = {c.state for c in self.comparisons}
        for state in (WORSE, OK, TOO_FEW):
            if state in states:
                return state
        return NOT_WATCHED

    @property
    def too_few(self) -> Comparison | None:
        """The watched figure nearest to being judged, when none is."""
        if self.state != TOO_FEW:
            return None
        waiting = [c for c in self.comparisons if c.state == TOO_FEW]
        return max(waiting, key=lambda c: c.have)

    def as_json(self) -> dict:
        def comparison(c: Comparison) -> dict:
            return {
                "state": c.state,
                "last_day": c.last,
                "usual": c.usual,
                "last_day_runs": c.last_runs,
                "usual_runs": c.usual_runs,
                "min_runs": c.needed,
                "threshold": c.threshold,
            }

        def window(w: Window) -> dict:
            return {
                "since": w.since,
                "until": w.until,
                "runs": w.runs,
                "succeeded": w.succeeded,
                "success_rate": w.success_rate,
                "p50": w.p50,
                "p95": w.p95,
            }

        open_ = self.regression
        return {
            "state": self.state,
            "last_day": window(self.last),
            "usual": window(self.usual),
            "p95": comparison(self.p95),
            "success": comparison(self.success),
            "regression": None
            if open_ is None
            else {"what": open_.what, "since": open_.started_at},
        }


def windows(*, now: datetime) -> tuple[datetime, datetime]:
    """The start of the last day (ops.selectors.hours_back of a day) and of its usual."""
    since = floor_hour(now) + timedelta(hours=1) - LAST_DAY
    return since, since - USUAL


def figures(*, agent_ids: list[int] | None, since: datetime, until: datetime | None):
    """{agent_id: Window} over [since, until) for ``agent_ids`` (None: every agent that ran):
    rollups of the whole periods and raw rows for the rest, in four queries."""
    part = rollups.split(since=since, until=until)
    rolled, raw = part.agents, part.raw
    if agent_ids is not None:
        rolled, raw = rolled.filter(agent_id__in=agent_ids), raw.filter(agent_id__in=agent_ids)
    totals = rollups.rollup_totals(rolled, by="agent_id", fields=("succeeded", "failed"))
    for (agent_id, _hour), f in rollups.count(raw, rollups.HOUR).items():
        totals.setdefault(agent_id, rollups.Figures()).add(f)
    durations: dict[int, Durations] = {}
    histograms = rollups.json_totals(rolled.filter(succeeded__gt=0), "durations", by_agent=True)
    for agent_id, histogram in histograms.items():
        durations.setdefault(agent_id, Durations()).add_histogram(histogram)
    for agent_id, duration in rollups.succeeded_durations(raw).values_list("agent_id", "duration"):
        durations.setdefault(agent_id, Durations()).add_values([duration.total_seconds()])
    found = {}
    for agent_id in set(totals) | set(durations):
        f = totals.get(agent_id, rollups.Figures())
        d = durations.get(agent_id, Durations())
        found[agent_id] = Window(
            since=since,
            until=until,
            runs=f.succeeded + f.failed,
            succeeded=f.succeeded,
            timed=len(d),
            p50=d.percentile(0.5),
            p95=d.percentile(0.95),
        )
    return found


def against_usual(*, agents: list[Agent] | None = None, now: datetime) -> dict[int, AgainstUsual]:
    """The last day against its usual of ``agents`` (None: every agent that ran in either
    window or has an open regression), in one set of queries whatever their number."""
    since, usual_since = windows(now=now)
    ids = None if agents is None else [a.pk for a in agents]
    # To the end of the current hour: nothing is created after now, and a check run for a time
    # past (tests, a late task) does not count what came after it.
    last = figures(agent_ids=ids, since=since, until=floor_hour(now) + timedelta(hours=1))
    usual = figures(agent_ids=ids, since=usual_since, until=since)
    open_ = Regression.objects.filter(ended_at__isnull=True)
    if ids is not None:
        open_ = open_.filter(agent_id__in=ids)
    regressions = {r.agent_id: r for r in open_}
    if agents is None:
        wanted = set(last) | set(usual) | set(regressions)
        agents = list(Agent.objects.filter(pk__in=wanted).select_related("owner"))
    found = {}
    for agent in agents:
        a = last.get(agent.pk) or Window(since=since, until=None)
        u = usual.get(agent.pk) or Window(since=usual_since, until=since)
        found[agent.pk] = AgainstUsual(
            last=a,
            usual=u,
            p95=compare_p95(
                a, u, percent=agent.regression_p95_percent, min_runs=agent.regression_min_runs
            ),
            success=compare_success(
                a, u, points=agent.regression_success_points, min_runs=agent.regression_min_runs
            ),
            regression=regressions.get(agent.pk),
        )
    return found


@dataclass
class Checked:
    opened: int = 0
    closed: int = 0


def check(*, now: datetime | None = None) -> Checked:
    """Open the regressions of agents worse than their usual (telling their owners once) and
    close those of agents back to it (see the module's docstring)."""
    now = now or timezone.now()
    done = Checked()
    for agent_id, found in against_usual(now=now).items():
        open_ = found.regression
        if open_ is None:
            worse = next((c for c in found.comparisons if c.worse), None)
            if worse is not None and regression_open(
                agent_id=agent_id, comparison=worse, since=found.last.since, at=now
            ):
                done.opened += 1
            continue
        about = found.p95 if open_.what == Regression.What.P95 else found.success
        reason = None
        if about.state == NOT_WATCHED:
            reason = Regression.EndReason.NOT_WATCHED
        elif about.state == TOO_FEW:
            reason = Regression.EndReason.TOO_FEW_RUNS
        elif all(c.recovered for c in found.comparisons if c.state in (OK, WORSE)):
            reason = Regression.EndReason.RECOVERED
        if reason is not None and regression_close(regression=open_, reason=reason, at=now):
            done.closed += 1
    return done


def regression_open(
    *, agent_id: int, comparison: Comparison, since: datetime, at: datetime
) -> Regression | None:
    """Open a regression and tell the agent's owner, unless one is open already (then None)."""
    from notifications.services import agent_regressed

    latest = (
        Execution.objects.filter(
            agent_id=agent_id,
            created_at__gte=since,
            status__in=(Execution.Status.SUCCEEDED, Execution.Status.FAILED),
        )
        # Not a run an earlier regression was told with: a delivery is unique per run, event
        # and channel, so the notice of a regression that came back would be dropped.
        .exclude(
            pk__in=Regression.objects.filter(agent_id=agent_id, execution_id__isnull=False).values(
                "execution_id"
            )
        )
        .order_by("-finished_at", "-id")
        .values_list("pk", flat=True)
        .first()
    )
    try:
        with transaction.atomic():
            regression = Regression.objects.create(
                agent_id=agent_id,
                what=comparison.what,
                started_at=at,
                last_value=comparison.last,
                usual_value=comparison.usual,
                last_runs=comparison.last_runs,
                usual_runs=comparison.usual_runs,
                threshold=comparison.threshold,
                execution_id=latest,
            )
            if latest is not None:
                agent_regressed(execution_id=latest, at=at)
    except IntegrityError:  # another check opened it first: it tells the owner
        return None
    logger.warning(
        "agent worse than usual",
        extra={
            "action": "agent_regressed",
            "agent_id": agent_id,
            "what": comparison.what,
            "last_day": comparison.last,
            "usual": comparison.usual,
        },
    )
    return regression


def regression_close(*, regression: Regression, reason: str, at: datetime) -> bool:
    closed = Regression.objects.filter(pk=regression.pk, ended_at__isnull=True).update(
        ended_at=at, end_reason=reason
    )
    if closed:
        logger.info(
            "agent back to its usual",
            extra={"action": "agent_recovered", "agent_id": regression.agent_id, "why": reason},
        )
    return bool(closed)


def open_regressions(*, user) -> list[Regression]:
    """The open regressions a user sees on the dashboard: staff every agent's, others their
    own agents'."""
    rows = Regression.objects.filter(ended_at__isnull=True).select_related("agent__owner")
    if not user.is_staff:
        rows = rows.filter(agent__owner=user)
    return list(rows.order_by("started_at", "id"))
