"""Read-side queries for the pages: stats, overviews, keyset-paginated lists, and why a run
waits (:func:`explain_wait`, the one explanation that pages, API and admin show).

Each function runs a fixed number of queries whatever the number of rows (the list pages'
tests assert it).
"""

from __future__ import annotations

import base64
import binascii
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.models import Agent

from .humanize import seconds_in_words
from .models import Execution, FlowStep, Limiter

Status = Execution.Status
# The window of the agents' figures: the home page's here, the agent page's and the API's
# default in ops.selectors.agent_stats (which reads rollups).
STATS_WINDOW = timedelta(days=7)


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


def agents_overview(*, owner, now: datetime | None = None, spark: int = 20) -> list[Agent]:
    """The owner's agents with last status, 7-day counts and the statuses of recent runs.

    Five queries whatever the number of rows: the agents with their last run and the creation
    time of their ``spark``-th newest run of the last 7 days (each a few entries of the
    (agent, created_at) index); their counts by status over the agent page's window
    (ops.selectors.agents_counts: rollups of whole past hours, the raw rows of the rest, three
    queries); and the runs of each agent from that time on (again through the agent's index),
    of which the newest ``spark`` are kept. A window over all of the owner's runs of the week
    did the same, reading every one of them.
    """
    from ops.selectors import agents_counts

    now = now or timezone.now()
    since = now - STATS_WINDOW
    last = Execution.objects.filter(agent=OuterRef("pk")).order_by("-created_at", "-id")
    week = last.filter(created_at__gte=since)
    agents = list(
        Agent.objects.filter(owner=owner)
        .annotate(
            last_status=Subquery(last.values("status")[:1]),
            last_run_at=Subquery(last.values("created_at")[:1]),
            # A delayed last run says when it starts, as recorded (wait_reason, wait_until).
            last_wait_reason=Subquery(last.values("wait_reason")[:1]),
            last_wait_until=Subquery(last.values("wait_until")[:1]),
            # From when the agent's last ``spark`` runs of the week were created (none: fewer).
            spark_from=Subquery(week.values("created_at")[spark - 1 : spark]),
        )
        .order_by("name")
    )
    counts = agents_counts(agent_ids=[a.pk for a in agents], now=now) if agents else {}
    sparks: dict[int, list[tuple]] = {agent.pk: [] for agent in agents}
    ran = [a for a in agents if a.last_run_at is not None and a.last_run_at >= since]
    if ran:
        recent = Q()
        for agent in ran:
            recent |= Q(agent_id=agent.pk, created_at__gte=agent.spark_from or since)
        rows = Execution.objects.filter(recent).values_list(
            "agent_id", "created_at", "id", "status"
        )
        for agent_id, created_at, pk, status in rows:
            sparks[agent_id].append((created_at, pk, status))
    for agent in agents:
        figures = counts.get(agent.pk)
        agent.succeeded_window = figures.succeeded if figures else 0
        agent.failed_window = figures.failed if figures else 0
        agent.runs_window = figures.runs if figures else 0
        finished = agent.succeeded_window + agent.failed_window
        agent.success_rate = agent.succeeded_window / finished if finished else None
        # The newest ``spark`` (runs created at the same instant as the first may add some),
        # oldest first.
        agent.spark = [status for _, _, status in sorted(sparks[agent.pk])[-spark:]]
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


def held_in_the_way(execution: Execution, *, at: datetime):
    """The agent's runs a ``held`` run waits for: those in the way, and the runs held before it
    (held runs go one at a time, oldest first)."""
    return (
        runs_in_the_way(at=at)
        .filter(agent_id=execution.agent_id)
        .exclude(pk=execution.pk)
        .exclude(wait_reason=Execution.WaitReason.HELD, pk__gt=execution.pk)
    )


# --- Limits (executions.capacity): who holds a slot, recent starts ---------------------------


def slot_holders(key: str):
    """The runs holding a slot of the concurrency limit ``key`` (``agent:<uuid>`` or
    ``queue:<name>``): running ones; for a queue, only those doing work (a flow waiting for its
    steps holds no queue slot)."""
    scope, _, name = key.partition(":")
    rows = Execution.objects.filter(status=Status.RUNNING)
    if scope == "agent":
        try:
            return rows.filter(agent__uuid=uuid.UUID(name))
        except ValueError:
            return rows.none()
    if scope == "queue":
        return rows.filter(agent__queue=name, wait_reason=Execution.WaitReason.NONE)
    return rows.none()


def recent_starts(limiter: Limiter | None, *, seconds: int, at: datetime) -> list[float]:
    """The starts a rate limit counts at ``at``: those of its last ``seconds`` (epoch seconds,
    oldest first)."""
    if limiter is None:
        return []
    since = at.timestamp() - seconds
    return [s for s in (limiter.starts or []) if s > since]


PERIOD_WORDS = {1: "a second", 60: "a minute", 3600: "an hour", 86400: "a day"}


def rate_words(limit: int, seconds: int) -> str:
    """ "at most 5 starts a minute", "at most 1 start an hour"."""
    period = PERIOD_WORDS.get(seconds, f"every {seconds_in_words(seconds)}")
    return f"at most {limit} start{'' if limit == 1 else 's'} {period}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


# --- Why a run waits ----------------------------------------------------------------------------

#: The reasons a list of executions filters by: every reason but "not waiting".
WAIT_REASONS = [(value, label) for value, label in Execution.WaitReason.choices if value]

# Linked runs an explanation lists at most (the rest are counted).
WAIT_RUNS = 10


@dataclass(frozen=True)
class Wait:
    """Why an active execution is not running now and until when, in words a person reads: the
    one explanation that the execution page, the API and the admin show."""

    #: ``Execution.wait_reason`` as recorded.
    reason: str
    #: The reason in words: the reason's label, or "No worker online for its queue".
    label: str
    #: The headline: "Waiting for a slot: 2 of 2 busy".
    title: str
    #: What it means and what happens next (whole sentences).
    detail: str = ""
    until: datetime | None = None
    #: How ``until`` reads: "It may start at", "Next probe at" ...
    until_words: str = ""
    waits_on: str = ""
    #: The runs it waits for (holding the slots, in the way, its current steps, the probe), only
    #: its owner's: another owner's runs are counted in ``detail``, never shown.
    runs: tuple[Execution, ...] = ()
    runs_label: str = ""
    #: Waiting for the broker: whether a worker read its queue lately (None: not known).
    worker_online: bool | None = None

    @property
    def message(self) -> str:
        """Everything in one text: headline, detail and the time."""
        from .templatetags.conveyor import when  # how pages write a moment

        parts = [f"{self.title}.", self.detail]
        if self.until is not None and self.until_words:
            parts.append(f"{self.until_words} {when(self.until)}.")
        return " ".join(p for p in parts if p)

    @property
    def holding(self) -> list[str]:
        return [str(run.uuid) for run in self.runs]


def explain_wait(execution: Execution, *, at: datetime | None = None) -> Wait | None:
    """Why ``execution`` waits and until when (None: it does not wait: running or finished).

    Reads what the services recorded (``wait_reason``, ``wait_until``, ``waits_on``) and the
    state of what it waits for: the limit's runs and row, the earlier run, the flow's steps,
    the workers seen on its queue. A few small queries, whatever the size of the tables.
    """
    if not execution.is_waiting:
        return None
    explain = WAIT_EXPLANATIONS.get(execution.wait_reason)
    if explain is None:  # a reason with no explanation yet (a test requires one for each)
        label = execution.get_wait_reason_display()
        return _wait(execution, label, until=execution.wait_until, until_words="Until")
    return explain(execution, at or timezone.now())


def _wait(execution: Execution, title: str, **fields) -> Wait:
    return Wait(
        reason=execution.wait_reason,
        label=fields.pop("label", None) or execution.get_wait_reason_display(),
        title=title,
        waits_on=execution.waits_on,
        **fields,
    )


def _is_due(until: datetime | None, at: datetime) -> bool:
    return until is not None and until <= at


def _explain_delayed(execution: Execution, at: datetime) -> Wait:
    until = execution.wait_until or execution.not_before
    if _is_due(until, at):
        detail = "Its start time has come: it is handed to a worker within seconds."
    else:
        detail = "It was asked to start later; nothing runs before then."
    return _wait(
        execution, "Delayed until its start time", detail=detail, until=until,
        until_words="It starts at",
    )  # fmt: skip


def _explain_held(execution: Execution, at: datetime) -> Wait:
    earlier = list(
        held_in_the_way(execution, at=at)
        .select_related("agent")
        .order_by("created_at", "pk")[:WAIT_RUNS]
    )
    if earlier:
        detail = (
            "Its agent does not start a scheduled run while an earlier one is active (overlap "
            "policy “queue”): it starts when the earlier run ends."
        )
    else:
        detail = "The earlier run has ended: it is handed to a worker within seconds."
    return _wait(
        execution,
        "Waiting for the agent's earlier run to finish",
        detail=detail,
        runs=tuple(earlier),
        runs_label="In the way",
    )


def _explain_broker(execution: Execution, at: datetime) -> Wait:
    from ops.presence import TTL, queues_online

    queue = execution.agent.queue
    online = queues_online([queue], now=at.timestamp())
    workers = None if online is None else online.get(queue, [])
    if workers == []:
        return _wait(
            execution,
            f"No worker online for its queue “{queue}”",
            label="No worker online for its queue",
            detail=f"No worker has read the queue “{queue}” in the last {TTL:.0f} s, so nothing "
            "can start it. It starts as soon as a worker reading that queue is running; if "
            f"this lasts, tell your operators (a worker started with -Q {queue}).",
            worker_online=False,
        )
    if workers:
        count = "1 worker is" if len(workers) == 1 else f"{len(workers)} workers are"
        detail = f"{count} online for it: it starts as soon as one is free."
    else:
        detail = "It starts as soon as a worker is free."
    return _wait(
        execution,
        f"Waiting for a worker on queue “{queue}”",
        detail=detail,
        worker_online=bool(workers) if workers is not None else None,
    )


def _explain_backoff(execution: Execution, at: datetime) -> Wait:
    until = execution.wait_until or execution.next_attempt_at
    number, most = execution.attempt + 1, execution.max_attempts
    title = f"Waiting to retry: attempt {execution.attempt} of {most} failed"
    if _is_due(until, at):
        detail = f"Attempt {number} is due now: it starts as soon as a worker takes it."
        return _wait(execution, title, detail=detail)
    detail = f"Attempt {number} of {most} starts after a wait, so that a passing problem can clear"
    if execution.retry_policy.jitter:
        detail += "; the wait is randomised, so that the retries of many runs do not come at once"
    detail += "."
    return _wait(execution, title, detail=detail, until=until, until_words="It is retried at")


def _current_steps(execution: Execution, *statuses: str) -> list[FlowStep]:
    return list(
        FlowStep.objects.filter(flow=execution, status__in=statuses)
        .select_related("execution__agent")
        .order_by("index", "id")
    )


def _quoted(keys: list[str]) -> str:
    names = [f"“{k}”" for k in keys]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _explain_steps(execution: Execution, at: datetime) -> Wait:
    steps = _current_steps(execution, FlowStep.Status.RUNNING)
    current = next((s for s in steps if not s.group), None)
    if current is None:
        return _wait(execution, "Waiting for its current step", detail="Its next step is starting.")
    if current.type == FlowStep.Type.GROUP:
        members = [s for s in steps if s.group == current.key]
        title = f"Waiting for its current step, “{current.key}”"
        if members:
            title += f": {_quoted([s.key for s in members])} side by side"
        detail = "The flow goes on when they have all ended."
    else:
        members = [current]
        title = f"Waiting for its current step, “{current.key}”"
        detail = "The flow goes on when it ends."
    runs = tuple(s.execution for s in members if s.execution is not None)
    waiting = [r for r in runs if r.is_waiting]
    if len(runs) == 1 and waiting:
        detail += f" Its run is waiting too: {waiting[0].get_wait_reason_display().lower()}."
    return _wait(execution, title, detail=detail, runs=runs[:WAIT_RUNS], runs_label="Step runs")


def _explain_pause(execution: Execution, at: datetime) -> Wait:
    steps = _current_steps(execution, FlowStep.Status.WAITING)
    what = f"the wait step {_quoted([s.key for s in steps])}" if steps else "a wait step"
    return _wait(
        execution,
        "Waiting before its next step",
        detail=f"The flow is in {what}; it goes on by itself when the wait is over.",
        until=execution.wait_until,
        until_words="It goes on at",
    )


def _gate(execution: Execution):
    """The limit ``execution.waits_on`` names, as it is configured now (None: lifted)."""
    from .capacity import gate_for_key, gates

    key = execution.waits_on
    for gate in gates(execution.agent):
        if gate.key == key:
            return gate
    return gate_for_key(key) if key else None


def _limit_lifted(execution: Execution, title: str) -> Wait:
    return _wait(
        execution,
        title,
        detail="That limit has been lifted since: it is handed to a worker within seconds.",
    )


def _explain_slot(execution: Execution, at: datetime) -> Wait:
    gate = _gate(execution)
    if gate is None or gate.concurrency is None:
        return _limit_lifted(execution, "Waiting for a slot")
    holders = slot_holders(gate.key)
    counts = holders.aggregate(
        busy=Count("pk"), theirs=Count("pk", filter=~Q(owner_id=execution.owner_id))
    )
    busy, others = counts["busy"], counts["theirs"]
    mine = tuple(
        holders.filter(owner_id=execution.owner_id)
        .select_related("agent")
        .order_by("started_at", "pk")[:WAIT_RUNS]
    )
    title = f"Waiting for a slot: {busy} of {gate.concurrency} busy"
    if gate.scope == "queue":
        title += f" on the queue “{gate.key.partition(':')[2]}”"
        detail = (
            f"The queue runs at most {_runs(gate.concurrency)} at once, of all agents on it; "
            "it starts when one of them ends."
        )
    else:
        most = _runs(gate.concurrency)
        detail = f"The agent runs at most {most} at once; it starts when one of them ends."
    if busy < gate.concurrency:
        detail = "A slot is free now: it is handed to a worker within seconds."
    if others:
        detail += (
            " Another user's run holds a slot."
            if others == 1
            else f" Runs of other users hold {others} of the slots."
        )
    ahead = _ahead_of(execution)
    if ahead:
        detail += f" {_runs(ahead)} wait{'s' if ahead == 1 else ''} before it."
    return _wait(
        execution, title, detail=detail, runs=mine,
        runs_label="Holding the slots" if mine else "",
    )  # fmt: skip


def _ahead_of(execution: Execution) -> int:
    return waiting_ahead(execution, key=execution.waits_on, reason=Execution.WaitReason.SLOT)


def waiting_ahead(execution: Execution, *, key: str, reason: str) -> int:
    """Runs waiting on the limit ``key`` for ``reason`` that go before ``execution`` (priority,
    then creation order): the line for a slot or for a rate limit's next start."""
    priority = execution.agent.priority
    return (
        Execution.objects.filter(
            waits_on=key,
            wait_reason=reason,
            status__in=Execution.ACTIVE_STATUSES,
        )
        .exclude(pk=execution.pk)
        .filter(
            Q(agent__priority__gt=priority)
            | Q(agent__priority=priority, created_at__lt=execution.created_at)
            | Q(agent__priority=priority, created_at=execution.created_at, pk__lt=execution.pk)
        )
        .count()
    )


def _explain_rate(execution: Execution, at: datetime) -> Wait:
    gate = _gate(execution)
    if gate is None or gate.rate is None:
        return _limit_lifted(execution, "Rate limited")
    words = rate_words(gate.rate.limit, gate.rate.seconds)
    until = execution.wait_until
    if _is_due(until, at):
        detail = "Its turn has come: it is handed to a worker within seconds."
    else:
        detail = "Runs over the limit wait their turn rather than fail."
    return _wait(
        execution,
        f"Rate limited: {words} for {gate.label}",
        detail=detail,
        until=until,
        until_words="It may start at",
    )


def _explain_circuit(execution: Execution, at: datetime) -> Wait:
    gate = _gate(execution)
    limiter = Limiter.objects.filter(key=execution.waits_on).first()
    label = gate.label if gate is not None else execution.waits_on.partition(":")[2]
    if gate is None or gate.breaker is None or limiter is None:
        return _limit_lifted(execution, f"Waiting for the circuit breaker of {label}")
    if limiter.state == Limiter.State.CLOSED:
        return _wait(
            execution,
            f"Waiting for the circuit breaker of {label}",
            detail="The breaker has closed: it is handed to a worker within seconds.",
        )
    failures = f"{limiter.failures} failure{'' if limiter.failures == 1 else 's'} in a row"
    detail = (
        "Conveyor stopped starting them so as not to pile onto a failing service; new runs "
        "wait instead of failing."
    )
    if limiter.last_failure:
        last = _clip(limiter.last_failure)
        detail += f" The last failure: “{last}{'' if last[-1] in '.!?…' else '.'}”"
    if limiter.state == Limiter.State.HALF_OPEN:
        probe = (
            Execution.objects.filter(pk=limiter.probe_execution, owner_id=execution.owner_id)
            .select_related("agent")
            .first()
            if limiter.probe_execution
            else None
        )
        detail += " A probe run is under way: if it succeeds, the waiting runs start."
        return _wait(
            execution,
            f"Circuit open for {label}: a probe run is under way",
            detail=detail,
            runs=(probe,) if probe else (),
            runs_label="The probe run",
        )
    until = execution.wait_until or limiter.probe_at
    if _is_due(until, at):
        detail += " A probe run is due now: if it succeeds, the waiting runs start."
    else:
        detail += " Then one probe run goes through: if it succeeds, the waiting runs start."
    return _wait(
        execution,
        f"Circuit open for {label} after {failures}",
        detail=detail,
        until=until,
        until_words="Next probe at",
    )


def _clip(text: str, size: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def _explain_paused(execution: Execution, at: datetime) -> Wait:
    agent = execution.agent
    if not agent.is_paused:
        return _wait(
            execution,
            f"The agent “{agent.name}” was paused",
            detail="It has been resumed since: the run is handed to a worker within seconds.",
        )
    return _wait(
        execution,
        f"The agent “{agent.name}” is paused",
        detail="It starts when the agent is resumed (while it is paused, runs already queued "
        "wait and new ones are refused).",
    )


#: Every wait reason's explanation (a test checks that each reason has one).
WAIT_EXPLANATIONS = {
    Execution.WaitReason.DELAYED: _explain_delayed,
    Execution.WaitReason.HELD: _explain_held,
    Execution.WaitReason.BROKER: _explain_broker,
    Execution.WaitReason.BACKOFF: _explain_backoff,
    Execution.WaitReason.STEPS: _explain_steps,
    Execution.WaitReason.PAUSE: _explain_pause,
    Execution.WaitReason.SLOT: _explain_slot,
    Execution.WaitReason.RATE: _explain_rate,
    Execution.WaitReason.CIRCUIT: _explain_circuit,
    Execution.WaitReason.PAUSED: _explain_paused,
}


# --- An agent's limits and their use (the agent page) -------------------------------------------


@dataclass
class LimitUse:
    """One limit that applies to an agent's runs (an ``executions.capacity`` gate) and how much
    of it is used now."""

    key: str
    #: "the agent “sync”", "the queue “reports”", "api.example.com".
    label: str
    scope: str
    concurrency: int | None = None
    #: Runs holding a slot now (counted only for a concurrency limit).
    running: int = 0
    #: Runs waiting on this limit now, by wait reason.
    waiting: dict[str, int] = field(default_factory=dict)
    rate_limit: int | None = None
    rate_seconds: int = 0
    #: Starts counted by the rate limit now (those of its last period).
    rate_used: int = 0
    #: With every start of the period used: when the next start is allowed.
    rate_free_at: datetime | None = None
    breaker_threshold: int = 0
    breaker_window: int = 0
    breaker_cooldown: int = 0
    #: The limit's row (None: it has no state yet: nothing was counted, the breaker is closed).
    limiter: Limiter | None = None
    #: A half-open breaker's probe run, when it is the viewer's.
    probe: Execution | None = None

    @property
    def waiting_for_slot(self) -> int:
        return self.waiting.get(Execution.WaitReason.SLOT, 0)

    @property
    def rate_text(self) -> str:
        """ "at most 5 starts a minute: 2 used in the last minute"."""
        if self.rate_limit is None:
            return ""
        period = PERIOD_WORDS.get(self.rate_seconds, "").removeprefix("a ").removeprefix("an ")
        period = period or seconds_in_words(self.rate_seconds)
        return (
            f"{rate_words(self.rate_limit, self.rate_seconds)}: {self.rate_used} used in the "
            f"last {period}"
        )

    @property
    def breaker_state(self) -> str:
        """closed, open or half_open (the states of ``Limiter.State``); "" without a breaker."""
        if not self.breaker_threshold:
            return ""
        return self.limiter.state if self.limiter is not None else Limiter.State.CLOSED

    @property
    def breaker_rule(self) -> str:
        """ "opens after 5 failures in a row within 5 min; first probe after 1 min"."""
        if not self.breaker_threshold:
            return ""
        failures = (
            "1 failure"
            if self.breaker_threshold == 1
            else (f"{self.breaker_threshold} failures in a row")
        )
        return (
            f"opens after {failures} within {seconds_in_words(self.breaker_window)}; "
            f"first probe after {seconds_in_words(self.breaker_cooldown)}"
        )


def limit_uses(*, agent: Agent, at: datetime | None = None) -> list[LimitUse]:
    """The limits on ``agent``'s runs (its own, its queue's, its destination's), each with its
    current use. At most four queries (the limits' rows, the waiting runs, the slots held),
    none for an agent without limits."""
    from .capacity import gates

    at = at or timezone.now()
    uses = []
    for gate in gates(agent):
        use = LimitUse(key=gate.key, label=gate.label, scope=gate.scope)
        use.concurrency = gate.concurrency
        if gate.rate is not None:
            use.rate_limit, use.rate_seconds = gate.rate.limit, gate.rate.seconds
        if gate.breaker is not None:
            use.breaker_threshold = gate.breaker.threshold
            use.breaker_window = gate.breaker.window
            use.breaker_cooldown = gate.breaker.cooldown
        uses.append(use)
    if not uses:
        return uses
    keys = [use.key for use in uses]
    limiters = {row.key: row for row in Limiter.objects.filter(key__in=keys)}
    waiting: dict[str, dict[str, int]] = {}
    for key, reason, n in (
        Execution.objects.filter(waits_on__in=keys, status__in=Execution.ACTIVE_STATUSES)
        .order_by()
        .values_list("waits_on", "wait_reason")
        .annotate(n=Count("pk"))
    ):
        waiting.setdefault(key, {})[reason] = n
    for use in uses:
        use.limiter = limiters.get(use.key)
        use.waiting = waiting.get(use.key, {})
        if use.concurrency is not None:
            use.running = slot_holders(use.key).count()
        if use.rate_limit is not None:
            starts = recent_starts(use.limiter, seconds=use.rate_seconds, at=at)
            use.rate_used = len(starts)
            if len(starts) >= use.rate_limit:
                use.rate_free_at = datetime.fromtimestamp(
                    starts[-use.rate_limit] + use.rate_seconds, tz=at.tzinfo
                )
        limiter = use.limiter
        if limiter is not None and limiter.state == Limiter.State.HALF_OPEN:
            use.probe = (
                Execution.objects.filter(pk=limiter.probe_execution, owner_id=agent.owner_id)
                .select_related("agent")
                .first()
            )
    return uses
