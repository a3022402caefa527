"""Capacity and protection: concurrency limits, rate limits, circuit breakers, paused agents.

Every limit is checked in one place, when a worker **claims** a run
(``services.execution_claim``), because every start goes through a claim: a new run, a retry,
a run sent again by a recovery pass. A limit is a *gate* (:class:`Gate`) with a key:

* ``agent:<uuid>``: the agent's ``max_concurrency``, ``rate_limit``, circuit breaker
  (``breaker_threshold`` failures in a row within ``breaker_window`` seconds) and pause;
* ``queue:<name>``: the queue's concurrency (``CONVEYOR_QUEUES``, set by operators);
* ``host:<host>``: an http agent's destination, when operators set limits for it
  (:class:`~executions.models.Destination`): a rate limit and a breaker shared by every agent
  that calls it.

**Claiming through gates** (:func:`claim`). In one transaction: lock the gates'
:class:`~executions.models.Limiter` rows (``SELECT ... FOR UPDATE``, in key order, so any number
of workers on any number of machines decide one at a time), read the run, then check, in this
order, pause, breaker, concurrency and rate. A run over a limit is not started: it stays queued
(or retrying) with why (``wait_reason`` ``paused``, ``circuit``, ``slot`` or ``rate``), until
when (``wait_until``, for a rate limit or an open breaker) and the gate it waits on
(``waits_on``); its message is acknowledged. A run within every limit is claimed in the same
transaction (``services._claim``), its start recorded (rate) and, when the breaker is due for a
probe, it becomes the probe (half-open).

**Letting waiting runs go.** Nothing polls. When a run leaves ``running``
(``services.transition``, and the Postgres fast path's finish), once that commits
:func:`left_running` frees its slot: the next run waiting on the gate (priority, then creation
order) is handed to the broker, and its claim checks again. It also feeds the breakers: a
failure of a category that may pass by itself counts toward opening, a success closes.
Closing a breaker (:func:`breaker_close`, by its probe's success or by an operator) and resuming
an agent let all their waiting runs go. Waits with a time (rate, open breaker) end by the
dispatcher's tick (:func:`release_due`), which also repairs what a lost message left behind:
free slots with runs waiting (a worker killed while holding one is freed by the reaper's
``attempt_fail``), a probe that ended unnoticed, a resumed agent's runs.

Runs of an agent with no limit pay nothing here but a look at the agent's fields.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from common.rates import Rate, parse_rate

from .errors import CATEGORIES
from .models import Destination, Execution, ExecutionLog, Limiter
from .selectors import recent_starts, slot_holders, waiting_ahead

logger = logging.getLogger("conveyor.capacity")

Status = Execution.Status
WaitReason = Execution.WaitReason
State = Limiter.State

#: The longest an open breaker waits before its next probe, however often probes failed.
MAX_COOLDOWN = 3600
#: How long the destinations' limits are kept in a process before they are read again.
DESTINATIONS_TTL = 5.0
#: Runs and gates handled per recovery pass.
PASS_LIMIT = 500
#: Waits on a limit the recovery pass handles: released when due or when the limit allows.
LIMIT_WAITS = (WaitReason.SLOT, WaitReason.RATE, WaitReason.CIRCUIT, WaitReason.PAUSED)


@dataclass(frozen=True)
class Breaker:
    threshold: int
    window: int
    cooldown: int


@dataclass(frozen=True)
class Gate:
    """One limit a run must pass to start."""

    key: str
    #: What people read: "the agent “sync”", "the queue “reports”", "api.example.com".
    label: str
    concurrency: int | None = None
    rate: Rate | None = None
    rate_text: str = ""
    breaker: Breaker | None = None
    paused: bool = False

    @property
    def scope(self) -> str:
        return self.key.split(":", 1)[0]


# --- Which gates apply -------------------------------------------------------------------------


def agent_key(agent: Agent) -> str:
    return f"agent:{agent.uuid}"


def queue_key(name: str) -> str:
    return f"queue:{name}"


def host_key(host: str) -> str:
    return f"host:{host}"


def queue_concurrency(name: str) -> int | None:
    return (settings.CONVEYOR_QUEUES.get(name) or {}).get("concurrency") or None


def agent_host(agent: Agent) -> str | None:
    """An http agent's destination host (lower case, no port), else None."""
    if agent.kind != "http":
        return None
    import httpx

    try:
        host = httpx.URL(str((agent.config or {}).get("url", ""))).host
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return host.lower() or None


_destinations: tuple[float, dict[str, Destination]] = (float("-inf"), {})


def destinations() -> dict[str, Destination]:
    """The destinations with limits, by host; read again after ``DESTINATIONS_TTL`` seconds,
    so an operator's change applies within seconds without a query per run."""
    global _destinations
    read_at, by_host = _destinations
    if time.monotonic() - read_at > DESTINATIONS_TTL:
        by_host = {d.host.lower(): d for d in Destination.objects.all()}
        _destinations = (time.monotonic(), by_host)
    return by_host


def forget_destinations() -> None:
    """Read the destinations again on next use (after an operator's change in this process)."""
    global _destinations
    _destinations = (float("-inf"), {})


def _breaker(threshold: int, window: int, cooldown: int) -> Breaker | None:
    return Breaker(threshold, window, cooldown) if threshold else None


def gates(agent: Agent) -> list[Gate]:
    """The limits that apply to the agent's runs, in the order their rows are locked."""
    found = []
    if agent.max_concurrency or agent.rate_limit or agent.breaker_threshold or agent.is_paused:
        found.append(
            Gate(
                key=agent_key(agent),
                label=f"the agent “{agent.name}”",
                concurrency=agent.max_concurrency or None,
                rate=parse_rate(agent.rate_limit) if agent.rate_limit else None,
                rate_text=agent.rate_limit,
                breaker=_breaker(
                    agent.breaker_threshold, agent.breaker_window, agent.breaker_cooldown
                ),
                paused=agent.is_paused,
            )
        )
    limit = queue_concurrency(agent.queue)
    if limit:
        found.append(
            Gate(key=queue_key(agent.queue), label=f"the queue “{agent.queue}”", concurrency=limit)
        )
    host = agent_host(agent)
    host_gate = _host_gate(host) if host else None
    if host_gate is not None:
        found.append(host_gate)
    return sorted(found, key=lambda gate: gate.key)


def _host_gate(host: str) -> Gate | None:
    """The limits operators set for ``host`` (a Destination), if any."""
    destination = destinations().get(host)
    if destination is None or not (destination.rate_limit or destination.breaker_threshold):
        return None
    return Gate(
        key=host_key(host),
        label=host,
        rate=parse_rate(destination.rate_limit) if destination.rate_limit else None,
        rate_text=destination.rate_limit,
        breaker=_breaker(
            destination.breaker_threshold, destination.breaker_window, destination.breaker_cooldown
        ),
    )


def gate_for_key(key: str) -> Gate | None:
    """The gate a waiting run's ``waits_on`` names, as it is configured now (None: gone)."""
    scope, _, name = key.partition(":")
    if scope == "agent":
        agent = Agent.objects.filter(uuid=name).first()
        return next((g for g in gates(agent) if g.key == key), None) if agent else None
    if scope == "queue":
        limit = queue_concurrency(name)
        return Gate(key=key, label=f"the queue “{name}”", concurrency=limit) if limit else None
    if scope == "host":
        return _host_gate(name)
    return None


def running(gate: Gate) -> int:
    """Runs holding one of the gate's slots (``selectors.slot_holders``)."""
    return slot_holders(gate.key).count()


# --- Locking -----------------------------------------------------------------------------------


def _lock(keys: list[str]) -> dict[str, Limiter]:
    """The Limiter rows of ``keys``, created when missing, locked until the transaction ends."""
    Limiter.objects.bulk_create([Limiter(key=k) for k in keys], ignore_conflicts=True)
    rows = Limiter.objects.select_for_update().filter(key__in=keys).order_by("key")
    return {row.key: row for row in rows}


# --- Claiming ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocked:
    reason: str
    gate: Gate
    until: datetime | None = None
    #: What the run's log says, once per wait.
    message: str = ""


def claim(
    *,
    execution_id: int,
    expected_attempt: int,
    worker: str,
    at: datetime,
    agent: Agent,
    gate_list: list[Gate],
):
    """``services.execution_claim`` for a run with limits: claimed (as ``services._claim``
    returns it), or None when it was not claimable or must wait (then it waits, saying why)."""
    from .services import _claim

    with transaction.atomic():
        limiters = _lock([gate.key for gate in gate_list])
        execution = (
            Execution.objects.filter(
                pk=execution_id,
                status__in=(Status.QUEUED, Status.RETRYING),
                attempt=expected_attempt,
            )
            .select_related("agent")
            .first()
        )
        if execution is None:
            return None
        blocked = None
        for gate in gate_list:
            blocked = _check(gate, limiters[gate.key], execution=execution, at=at)
            if blocked:
                break
        if blocked:
            _wait(execution, blocked, at=at)
            return None
        claimed = _claim(
            execution_id=execution_id, expected_attempt=expected_attempt, worker=worker, at=at
        )
        if claimed is not None:
            for gate in gate_list:
                _admitted(gate, limiters[gate.key], execution=execution, at=at)
    return claimed


def _check(gate: Gate, limiter: Limiter, *, execution: Execution, at: datetime) -> Blocked | None:
    """Whether ``gate`` lets the run start now (None) or why it must wait."""
    if gate.paused:
        return Blocked(
            WaitReason.PAUSED,
            gate,
            message="Waiting: the agent is paused. It starts when the agent is resumed.",
        )
    if gate.breaker is not None and limiter.state != State.CLOSED:
        probe_due = limiter.state == State.OPEN and limiter.probe_at and limiter.probe_at <= at
        probing = limiter.state == State.HALF_OPEN and limiter.probe_execution == execution.pk
        if not (probe_due or probing or _probe_gone(limiter)):
            until = limiter.probe_at if limiter.state == State.OPEN else None
            return Blocked(
                WaitReason.CIRCUIT,
                gate,
                until=until,
                message=f"Waiting: the circuit breaker for {gate.label} is open after "
                f"{limiter.failures} failures in a row"
                + (
                    f"; next probe at {until:%H:%M:%S} UTC."
                    if until
                    else "; a probe run is under way."
                ),
            )
    if gate.concurrency is not None:
        busy = running(gate)
        if busy >= gate.concurrency:
            return Blocked(
                WaitReason.SLOT,
                gate,
                message=f"Waiting for a slot: {busy} of {gate.concurrency} busy ({gate.label}).",
            )
    if gate.rate is not None:
        starts = _recent_starts(limiter, gate.rate, at)
        # Runs already waiting for this rate that go first take the next starts, in order.
        ahead = waiting_ahead(execution, key=gate.key, reason=WaitReason.RATE)
        free_now = gate.rate.limit - len(starts)
        if ahead >= free_now:
            until = _next_rate_start(starts, gate.rate, position=ahead - free_now, at=at)
            return Blocked(
                WaitReason.RATE,
                gate,
                until=until,
                message=f"Waiting for the rate limit of {gate.label} ({gate.rate_text}): it may "
                f"start at {until:%H:%M:%S} UTC.",
            )
    return None


def _next_rate_start(starts: list[float], rate: Rate, *, position: int, at: datetime) -> datetime:
    """When the run ``position`` places back in the line (0: the first) may start: each start
    of the window frees a start one period later, in turn, period after period."""
    if not starts:
        return at
    turn, index = divmod(position, len(starts))
    return datetime.fromtimestamp(starts[index] + rate.seconds * (turn + 1), tz=at.tzinfo)


def _probe_gone(limiter: Limiter) -> bool:
    """Half-open, but the probe run is no longer running (cancelled, or ended unnoticed)."""
    if limiter.state != State.HALF_OPEN:
        return False
    return not Execution.objects.filter(
        pk=limiter.probe_execution, status__in=Execution.ACTIVE_STATUSES
    ).exists()


def _recent_starts(limiter: Limiter, rate: Rate, at: datetime) -> list[float]:
    return recent_starts(limiter, seconds=rate.seconds, at=at)


def _admitted(gate: Gate, limiter: Limiter, *, execution: Execution, at: datetime) -> None:
    """The run passed every gate and was claimed: count its start, make it the probe."""
    fields = []
    if gate.rate is not None:
        limiter.starts = [*_recent_starts(limiter, gate.rate, at), at.timestamp()]
        fields.append("starts")
    if gate.breaker is not None and limiter.state != State.CLOSED:
        limiter.state = State.HALF_OPEN
        limiter.probe_execution = execution.pk
        fields += ["state", "probe_execution"]
        logger.info(
            "circuit half-open: probe run started",
            extra={
                "action": "breaker_probe",
                "limiter": gate.key,
                "execution_id": str(execution.uuid),
            },
        )
    if fields:
        limiter.save(update_fields=[*fields, "updated_at"])


def _wait(execution: Execution, blocked: Blocked, *, at: datetime) -> None:
    """Leave the run waiting on the gate (a compare-and-set on what was read), with one log
    line when the reason is new."""
    changed = Execution.objects.filter(
        pk=execution.pk, status=execution.status, attempt=execution.attempt
    ).update(wait_reason=blocked.reason, wait_until=blocked.until, waits_on=blocked.gate.key)
    if changed and (execution.wait_reason, execution.waits_on) != (
        blocked.reason,
        blocked.gate.key,
    ):
        ExecutionLog.objects.create(
            execution_id=execution.pk,
            attempt=execution.attempt,
            at=at,
            level=ExecutionLog.Level.INFO,
            message=blocked.message,
            data={"wait_reason": blocked.reason, "waits_on": blocked.gate.key},
        )
    logger.info(
        "run waits for a limit",
        extra={
            "action": "execution_waits",
            "execution_id": str(execution.uuid),
            "wait_reason": blocked.reason,
            "limiter": blocked.gate.key,
        },
    )


def initial_wait(agent: Agent, gate_list: list[Gate]) -> dict | None:
    """For a new run: wait for a slot at once when others already wait for one or every slot is
    busy, so that runs start in order (the claim decides anyway)."""
    for gate in gate_list:
        if gate.concurrency is None:
            continue
        others_wait = Execution.objects.filter(
            waits_on=gate.key, wait_reason=WaitReason.SLOT, status__in=Execution.ACTIVE_STATUSES
        ).exists()
        if others_wait or running(gate) >= gate.concurrency:
            return {"wait_reason": WaitReason.SLOT, "waits_on": gate.key}
    return None


# --- Letting runs go ---------------------------------------------------------------------------


def _waiting(key: str, reason: str):
    rows = Execution.objects.filter(
        waits_on=key, wait_reason=reason, status__in=(Status.QUEUED, Status.RETRYING)
    )
    # Priority (higher first), then creation order.
    return rows.select_related("agent").order_by("-agent__priority", "created_at", "pk")


def release(execution: Execution, *, at: datetime) -> bool:
    """Hand a run waiting on a limit to the broker (a compare-and-set on what was read); its
    claim checks the limits again. Published on commit."""
    from .services import publish_if_unchanged

    fields = {"waits_on": "", "published_at": at}
    if execution.status == Status.QUEUED:
        fields.update(wait_reason=WaitReason.BROKER, wait_until=None)
    else:  # retrying: its next attempt is due now
        fields.update(wait_reason=WaitReason.BACKOFF, wait_until=at)
    return publish_if_unchanged(execution, seen=("waits_on",), fields=fields)


def release_slots(gate: Gate, *, at: datetime) -> int:
    """Let as many runs waiting for a slot of ``gate`` go as it has free slots."""
    if gate.concurrency is None:
        return 0
    free = gate.concurrency - running(gate)
    if free <= 0:
        return 0
    return sum(release(e, at=at) for e in _waiting(gate.key, WaitReason.SLOT)[:free])


def release_all(key: str, reason: str, *, at: datetime) -> int:
    return sum(release(e, at=at) for e in _waiting(key, reason)[:PASS_LIMIT])


def left_running(execution: Execution) -> None:
    """A run left ``running`` (inside the transaction that moved it): once that commits, free
    its slot and tell the breakers how it went."""
    agent = execution._state.fields_cache.get("agent")
    if agent is None:
        agent = Agent.objects.filter(pk=execution.agent_id).first()
        if agent is None:
            return
    gate_list = gates(agent)
    if not gate_list:
        return
    status, category = execution.status, execution.error_category
    execution_pk, message = execution.pk, execution.error_message

    def after_commit():  # named: Django logs a robust callback's failure by its __qualname__
        at = timezone.now()
        for gate in gate_list:
            if gate.breaker is not None:
                if status == Status.SUCCEEDED:
                    breaker_success(gate, execution_pk=execution_pk, at=at)
                elif (
                    status in (Status.RETRYING, Status.FAILED)
                    and category
                    and (CATEGORIES[category].retryable)
                ):
                    breaker_failure(gate, execution_pk=execution_pk, message=message, at=at)
            release_slots(gate, at=at)

    transaction.on_commit(after_commit, robust=True)


# --- Circuit breakers --------------------------------------------------------------------------


def breaker_failure(gate: Gate, *, execution_pk: int, message: str, at: datetime) -> None:
    """A run through ``gate`` failed with an error that may pass by itself."""
    breaker = gate.breaker
    with transaction.atomic():
        limiter = _lock([gate.key])[gate.key]
        if limiter.state == State.HALF_OPEN and limiter.probe_execution == execution_pk:
            cooldown = min(max(limiter.cooldown, breaker.cooldown) * 2, MAX_COOLDOWN)
            _open(limiter, gate, at=at, cooldown=cooldown, message=message, probe_failed=True)
            return
        if limiter.state != State.CLOSED:
            return  # a run that started before it opened: it already counted
        if limiter.first_failure_at is None or (
            at - limiter.first_failure_at > timedelta(seconds=breaker.window)
        ):
            limiter.failures, limiter.first_failure_at = 0, at
        limiter.failures += 1
        limiter.last_failure = message[:2000]
        if limiter.failures >= breaker.threshold:
            _open(limiter, gate, at=at, cooldown=breaker.cooldown, message=message)
            transaction.on_commit(lambda: _tell_owner(execution_pk), robust=True)
        else:
            limiter.save(
                update_fields=["failures", "first_failure_at", "last_failure", "updated_at"]
            )


def _open(limiter: Limiter, gate: Gate, *, at, cooldown: int, message: str, probe_failed=False):
    limiter.state = State.OPEN
    limiter.opened_at = limiter.opened_at if probe_failed else at
    limiter.cooldown = cooldown
    limiter.probe_at = at + timedelta(seconds=cooldown)
    limiter.probe_execution = None
    limiter.last_failure = message[:2000]
    limiter.save()
    # Runs waiting for the probe's outcome now wait for the next probe.
    Execution.objects.filter(
        waits_on=gate.key, wait_reason=WaitReason.CIRCUIT, status__in=Execution.ACTIVE_STATUSES
    ).update(wait_until=limiter.probe_at)
    logger.warning(
        "circuit breaker opened" if not probe_failed else "circuit probe failed: open again",
        extra={
            "action": "breaker_opened",
            "limiter": gate.key,
            "failures": limiter.failures,
            "cooldown": cooldown,
        },
    )


def breaker_success(gate: Gate, *, execution_pk: int, at: datetime) -> None:
    """A run through ``gate`` succeeded: the failures in a row start again from 0, and a
    breaker that was probing closes."""
    current = Limiter.objects.filter(key=gate.key).values_list("state", "failures").first()
    if current is None or current == (State.CLOSED, 0):
        return
    with transaction.atomic():
        limiter = _lock([gate.key])[gate.key]
        if limiter.state == State.CLOSED:
            limiter.failures, limiter.first_failure_at = 0, None
            limiter.save(update_fields=["failures", "first_failure_at", "updated_at"])
            return
        if limiter.state == State.HALF_OPEN and limiter.probe_execution != execution_pk:
            return  # a run from before it opened; the probe decides
        _close(limiter, gate, at=at, why="its probe run succeeded")


def _close(limiter: Limiter, gate: Gate, *, at: datetime, why: str) -> int:
    limiter.state = State.CLOSED
    limiter.failures, limiter.first_failure_at = 0, None
    limiter.probe_at, limiter.probe_execution, limiter.cooldown = None, None, 0
    limiter.save()
    logger.info(
        "circuit breaker closed",
        extra={"action": "breaker_closed", "limiter": gate.key, "why": why},
    )
    return release_all(gate.key, WaitReason.CIRCUIT, at=at)


def breaker_close(*, key: str, by: str, at: datetime | None = None) -> bool:
    """Close an open (or half-open) breaker by hand and let its waiting runs go. Logged with who
    did it. Returns False when it was not open."""
    at = at or timezone.now()
    with transaction.atomic():
        limiter = Limiter.objects.select_for_update().filter(key=key).first()
        if limiter is None or limiter.state == State.CLOSED:
            return False
        gate = gate_for_key(key) or Gate(key=key, label=key)
        released = _close(limiter, gate, at=at, why=f"closed by hand by {by or 'an operator'}")
    logger.warning(
        "circuit breaker closed by hand",
        extra={"action": "breaker_closed_by_hand", "limiter": key, "by": by, "released": released},
    )
    return True


def _tell_owner(execution_pk: int) -> None:
    """The breaker opened: tell the owner of the agent whose run opened it, on its channels."""
    from django.apps import apps

    if apps.is_installed("notifications"):
        from notifications.services import breaker_opened

        breaker_opened(execution_id=execution_pk)


# --- The recovery pass -------------------------------------------------------------------------


def release_due(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """The dispatcher tick's pass: end waits whose time has come and repair what a lost message
    left behind. Returns the runs let go."""
    released = 0
    waiting = Execution.objects.filter(
        status__in=(Status.QUEUED, Status.RETRYING), wait_reason__in=LIMIT_WAITS
    )
    # Rate limits and open breakers: their time has come (the claim checks again).
    due = waiting.filter(
        wait_reason__in=(WaitReason.RATE, WaitReason.CIRCUIT), wait_until__lte=at
    ).select_related("agent")
    for execution in due.order_by("wait_until", "pk")[:limit]:
        released += release(execution, at=at)
    # Breakers probing with a probe that ended unnoticed (its outcome's message was lost).
    for limiter in Limiter.objects.filter(state=State.HALF_OPEN)[:limit]:
        released += _settle_probe(limiter, at=at)
    # Every other waiting gate, once: free slots, a closed breaker, a resumed agent.
    keys = (
        waiting.filter(Q(wait_until__isnull=True) | Q(wait_reason=WaitReason.SLOT))
        .values_list("waits_on", "wait_reason")
        .distinct()
    )
    for key, reason in list(keys[:limit]):
        gate = gate_for_key(key)
        if reason == WaitReason.SLOT:
            released += (
                release_slots(gate, at=at)
                if gate and gate.concurrency
                else release_all(key, reason, at=at)  # the limit was lifted
            )
        elif reason == WaitReason.PAUSED and not (gate and gate.paused):
            released += release_all(key, reason, at=at)
        elif reason == WaitReason.CIRCUIT:
            state = Limiter.objects.filter(key=key).values_list("state", flat=True).first()
            if gate is None or gate.breaker is None or state in (None, State.CLOSED):
                released += release_all(key, reason, at=at)
    return released


def _settle_probe(limiter: Limiter, *, at: datetime) -> int:
    probe = (
        Execution.objects.filter(pk=limiter.probe_execution)
        .values_list("status", "error_category", "error_message")
        .first()
    )
    if probe is not None and probe[0] in Execution.ACTIVE_STATUSES:
        return 0
    gate = gate_for_key(limiter.key) or Gate(key=limiter.key, label=limiter.key)
    with transaction.atomic():
        locked = _lock([limiter.key])[limiter.key]
        if locked.state != State.HALF_OPEN or locked.probe_execution != limiter.probe_execution:
            return 0
        if probe is not None and probe[0] == Status.SUCCEEDED:
            return _close(locked, gate, at=at, why="its probe run succeeded")
        # Failed or cancelled, or deleted: the next run probes after a short wait.
        cooldown = min(max(locked.cooldown, 1), MAX_COOLDOWN)
        _open(
            locked,
            gate,
            at=at,
            cooldown=cooldown,
            message=(probe or ("", "", ""))[2] or locked.last_failure,
            probe_failed=True,
        )
    return 0
