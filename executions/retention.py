"""Retention: finished executions, and everything that belongs to them, are deleted once they are
old enough, in small batches.

The rules:

1. **What goes.** A finished execution whose ``finished_at`` is further back than its agent's
   retention: ``CONVEYOR_RETAIN_SUCCEEDED_DAYS`` (30) for a succeeded one,
   ``CONVEYOR_RETAIN_FAILED_DAYS`` (90) for a failed **or cancelled** one. Cancelled runs keep
   the failures' time: a run someone stopped, or that a flow's time limit cut, is what people
   look into later, as they look into failures; successes are the bulk and the least looked at.
   An agent's ``retain_succeeded_days`` / ``retain_failed_days`` replace the site's for its runs.
   Queued, running and retrying executions never go, however old.
2. **What goes with it.** Its attempts, events, logs, flow steps (a flow's ``FlowStep`` rows),
   notification deliveries with their attempts, completion hook and artifacts (their files
   too: ``artifacts.services.artifacts_delete`` when the artifacts app is installed). Rows that
   only point at it stay, the pointer cleared (``SET_NULL``): a manual retry's ``retry_of``, and
   a retried flow's step that reused one of its steps (``FlowStep.reused_from``; the step keeps
   the result it copied and shows as succeeded).
3. **Flows go whole.** Only top-level executions are picked; a flow takes its steps (and theirs,
   at any depth) with it, so a step never goes while its flow stays. A flow stays while any of
   its steps stays: one still active, or one whose own agent keeps its runs longer.
4. **Rollups first.** Before a row goes, the hourly and daily rollups that outlive it are written
   up to now (``ops.rollups.roll_up(until=now)``), so the statistics of the period survive.
5. **Small batches.** Up to ``CONVEYOR_RETENTION_BATCH`` top-level executions at a time, oldest
   end first, read through the ``execution_finished`` index and paged by (``finished_at``, id)
   so that a run reads each old row once; each batch is deleted in one short transaction: what
   only points at its executions lets go, then each kind of row that belongs to them goes in
   one statement, children first, the executions last. No statement is large and no lock is
   held for long. Artifacts' rows go in the same transaction, their files once it commits.
6. **Resumable.** A batch is committed whole or not at all and nothing is remembered between
   runs: a killed run leaves whole batches done, and the next run finds the rest by the same
   query.
7. **A time budget.** A run given ``max_seconds`` stops between batches once they have passed
   (always after one batch at least, so each run moves on); its report says it is not complete.
   The clock starts after the rollups. The daily task (``executions.tasks.apply_retention``)
   runs with ``CONVEYOR_RETENTION_MAX_SECONDS`` and sends itself again until a run completes.
8. **Celery's results.** django-celery-results' ``TaskResult`` and ``GroupResult`` rows whose
   ``date_done`` is further back than ``CONVEYOR_RETAIN_SUCCEEDED_DAYS`` go too, in the same
   batches (Celery's own ``celery.backend_cleanup``, one DELETE, is off: ``CELERY_RESULT_EXPIRES``
   is None in config/settings.py).
9. **A dry run** reads exactly what a real run would delete, batch by batch, and counts it
   (per kind of row and per agent) without deleting or rolling up anything.

Every batch is logged (action ``retention_batch``, with its counts), and each run once at its end
(``retention_run``).
"""

from __future__ import annotations

import logging
import operator
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from agents.models import Agent

from .models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog, FlowStep

logger = logging.getLogger("conveyor.retention")

SUCCEEDED = (Execution.Status.SUCCEEDED,)
FAILED = (Execution.Status.FAILED, Execution.Status.CANCELLED)

# The kinds of row that go (the reports' names), by model label, in the order reports list them.
KINDS = {
    "executions.Execution": "executions",
    "executions.ExecutionAttempt": "attempts",
    "executions.ExecutionEvent": "events",
    "executions.ExecutionLog": "logs",
    "executions.FlowStep": "flow steps",
    "notifications.Delivery": "deliveries",
    "notifications.DeliveryAttempt": "delivery attempts",
    "notifications.CompletionHook": "completion hooks",
    "artifacts.Artifact": "artifacts",
    "django_celery_results.TaskResult": "task results",
    "django_celery_results.GroupResult": "group results",
}


# --- Who keeps what ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Executions in ``statuses`` that finished before ``cutoff`` (``days`` before now) go: those
    of the agents in ``agents`` or, with ``others``, of every agent but those."""

    statuses: tuple[str, ...]
    days: int
    cutoff: datetime
    agents: frozenset[int] = frozenset()
    others: bool = False

    def q(self) -> Q:
        q = Q(status__in=self.statuses, finished_at__lt=self.cutoff)
        if self.others:
            return q & ~Q(agent_id__in=sorted(self.agents)) if self.agents else q
        return q & Q(agent_id__in=sorted(self.agents))

    def describe(self) -> str:
        what = " and ".join(self.statuses)
        after = f"{what}: after {self.days} day{'s' if self.days != 1 else ''}"
        if self.others:
            return after
        count = len(self.agents)
        return f"{after} for {count} agent{'s' if count != 1 else ''}"


def rules(
    *,
    now: datetime,
    succeeded_days: int,
    failed_days: int,
    overrides: Iterable[tuple[int, int | None, int | None]] = (),
) -> tuple[Rule, ...]:
    """The rules that say which finished executions go at ``now``: the site's days for every
    agent, and one rule per number of days that agents chose instead. ``overrides`` are
    (agent id, retain_succeeded_days, retain_failed_days) of the agents that set either.

    Every finished execution falls under exactly one rule of its status."""
    overrides = list(overrides)
    found = []
    for statuses, default, column in ((SUCCEEDED, succeeded_days, 1), (FAILED, failed_days, 2)):
        by_days: dict[int, set[int]] = {}
        for row in overrides:
            days = row[column]
            if days is not None and days != default:
                by_days.setdefault(days, set()).add(row[0])
        own = frozenset(pk for agents in by_days.values() for pk in agents)
        found.append(
            Rule(statuses, default, now - timedelta(days=default), agents=own, others=True)
        )
        for days, agents in sorted(by_days.items()):
            found.append(Rule(statuses, days, now - timedelta(days=days), frozenset(agents)))
    return tuple(found)


@dataclass(frozen=True)
class Policy:
    now: datetime
    rules: tuple[Rule, ...]
    results_cutoff: datetime

    def q(self) -> Q:
        """The executions that may go (by their own rule; rule 3 may still keep them)."""
        return reduce(operator.or_, (rule.q() for rule in self.rules))


def current_policy(*, now: datetime) -> Policy:
    overrides = Agent.objects.filter(
        Q(retain_succeeded_days__isnull=False) | Q(retain_failed_days__isnull=False)
    ).values_list("pk", "retain_succeeded_days", "retain_failed_days")
    return Policy(
        now=now,
        rules=rules(
            now=now,
            succeeded_days=settings.CONVEYOR_RETAIN_SUCCEEDED_DAYS,
            failed_days=settings.CONVEYOR_RETAIN_FAILED_DAYS,
            overrides=overrides,
        ),
        results_cutoff=now - timedelta(days=settings.CONVEYOR_RETAIN_SUCCEEDED_DAYS),
    )


# --- The run --------------------------------------------------------------------------------


@dataclass
class Report:
    """What a run deleted (or, dry, would delete)."""

    dry_run: bool = False
    # Rows by kind (KINDS' names), executions included.
    rows: Counter = field(default_factory=Counter)
    # Executions (steps included) by agent id.
    agents: Counter = field(default_factory=Counter)
    batches: int = 0
    # Flows old enough to go that stay for one of their steps (rule 3).
    kept: int = 0
    # False when the time budget stopped the run before the end.
    complete: bool = True
    seconds: float = 0.0

    @property
    def executions(self) -> int:
        return self.rows["executions"]

    def counts(self) -> dict[str, int]:
        """Rows by kind, in KINDS' order, the kinds with none left out."""
        return ordered(self.rows)


def ordered(counts: Counter) -> dict[str, int]:
    """``counts`` of rows by kind in KINDS' order (executions first), the kinds with none left
    out."""
    order = {kind: i for i, kind in enumerate(KINDS.values())}
    return {
        kind: n
        for kind, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], len(order)))
        if n
    }


def retention_run(
    *,
    now: datetime | None = None,
    batch: int | None = None,
    max_seconds: float | None = None,
    dry_run: bool = False,
    progress: Callable[[Report, dict[str, int]], None] | None = None,
) -> Report:
    """Delete what the rules say may go (see the module docstring), ``batch`` top-level
    executions at a time (default ``CONVEYOR_RETENTION_BATCH``), for about ``max_seconds`` (None:
    until done); ``dry_run`` only counts. ``progress(report, batch_counts)`` is called after each
    batch."""
    now = now or timezone.now()
    size = batch or settings.CONVEYOR_RETENTION_BATCH
    if size < 1:
        raise ValueError("The batch size must be at least 1.")
    began = time.monotonic()
    report = Report(dry_run=dry_run)
    if not dry_run:
        _roll_up(now)
    policy = current_policy(now=now)
    clock = time.monotonic()

    def out_of_time() -> bool:
        # Checked before each batch but the first: every run moves on by one batch at least.
        if max_seconds is None or not report.batches:
            return False
        if time.monotonic() - clock < max_seconds:
            return False
        report.complete = False
        return True

    def done(counts: Counter, agents: Counter) -> None:
        report.batches += 1
        report.rows.update(counts)
        report.agents.update(agents)
        counts = ordered(counts)
        logger.info(
            "retention batch %s: %s %s",
            report.batches,
            "would delete" if dry_run else "deleted",
            ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "nothing",
            extra={"action": "retention_batch", "dry_run": dry_run, **_fields(counts)},
        )
        if progress is not None:
            progress(report, counts)

    for rule in policy.rules:
        top_level = Execution.objects.filter(rule.q(), parent__isnull=True)
        for rows in _pages(top_level, "finished_at", size, out_of_time, "agent_id"):
            units, kept = _whole_units(rows, policy)
            report.kept += kept
            counts = _count(units) if dry_run else _delete(units)
            done(counts, Counter(units.values()))
    for model in _celery_result_models():
        old = model.objects.filter(date_done__lt=policy.results_cutoff)
        for rows in _pages(old, "date_done", size, out_of_time):
            ids = [pk for _, pk in rows]
            label = KINDS[model._meta.label]
            if dry_run:
                done(Counter({label: len(ids)}), Counter())
            else:
                with transaction.atomic():
                    deleted, _ = model.objects.filter(pk__in=ids).delete()
                done(Counter({label: deleted}), Counter())

    report.seconds = time.monotonic() - began
    logger.info(
        "retention run %s: %s %s executions and %s rows in all in %s batches (%.1f s)%s",
        "(dry)" if dry_run else "done" if report.complete else "stopped by its time budget",
        "would delete" if dry_run else "deleted",
        report.executions,
        sum(report.rows.values()),
        report.batches,
        report.seconds,
        f"; {report.kept} flows kept for their steps" if report.kept else "",
        extra={
            "action": "retention_run",
            "dry_run": dry_run,
            "complete": report.complete,
            "batches": report.batches,
            "kept": report.kept,
            "seconds": round(report.seconds, 3),
            **_fields(report.counts()),
        },
    )
    return report


def _fields(counts: dict[str, int]) -> dict[str, int]:
    """Counts as log record attributes (``deleted_flow_steps``...)."""
    return {f"deleted_{kind.replace(' ', '_')}": n for kind, n in counts.items()}


def _roll_up(now: datetime) -> None:
    """Write the rollups up to ``now`` before anything goes (rule 4); an error in it stops the
    run here, before anything is deleted."""
    from ops.rollups import roll_up

    roll_up(until=now)


def _pages(
    queryset: QuerySet, column: str, size: int, out_of_time: Callable[[], bool], *fields: str
):
    """Rows ``(column, pk, *fields)`` of ``queryset`` in ``size``-row pages, in (``column``,
    pk) order, each page starting after the last row of the one before (keyset paging: what a
    page deleted, or left, is never read again), until none is left or ``out_of_time()``."""
    after = None
    while not out_of_time():
        page = queryset
        if after is not None:
            value, pk = after
            # The first condition alone is what an index on ``column`` can start from.
            page = page.filter(**{f"{column}__gte": value}).filter(
                Q(**{f"{column}__gt": value}) | Q(pk__gt=pk)
            )
        rows = list(page.order_by(column, "pk").values_list(column, "pk", *fields)[:size])
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = rows[-1][:2]


def _among(ids: list[int]):
    """``ids`` as the right side of an ``__in`` filter: on Postgres one array parameter (a
    statement with hundreds of placeholders costs more to build and parse than to run), else
    the list itself."""
    if connection.vendor == "postgresql":
        # As the array's text: psycopg adapts a list of numbers one number at a time.
        return RawSQL("SELECT unnest(%s::bigint[])", ("{" + ",".join(map(str, ids)) + "}",))
    return ids


def _whole_units(rows: list[tuple], policy: Policy) -> tuple[dict[int, int], int]:
    """The top-level executions of ``rows`` (``finished_at, pk, agent_id``) with their steps at
    any depth (rule 3), less every flow a step of which stays: ``{pk: agent id}`` of what goes,
    and how many top-level executions stay for their steps."""
    root_of = {pk: pk for _, pk, _ in rows}
    agent_of = {pk: agent for _, pk, agent in rows}
    kept: set[int] = set()
    expired = ExpressionWrapper(policy.q(), output_field=BooleanField())
    level = list(root_of)
    while level:
        children = (
            Execution.objects.filter(parent_id__in=_among(level))
            .annotate(expired=expired)
            .values_list("pk", "parent_id", "agent_id", "expired")
        )
        level = []
        for pk, parent, agent, gone in children:
            root_of[pk] = root = root_of[parent]
            agent_of[pk] = agent
            level.append(pk)
            if not gone:  # active, or kept longer by its own rule (None: not finished)
                kept.add(root)
    units = {pk: agent_of[pk] for pk, root in root_of.items() if root not in kept}
    return units, len(kept)


def _belonging(ids: list[int]) -> dict[str, QuerySet]:
    """The rows of every kind that go with executions ``ids`` (rule 2), by model label, the
    children before what they belong to. A dry run counts these; a real run deletes them."""
    among = _among(ids)
    found = {}
    if apps.is_installed("artifacts"):
        artifact = apps.get_model("artifacts", "Artifact")
        found["artifacts.Artifact"] = artifact.objects.filter(execution_id__in=among)
    if apps.is_installed("notifications"):
        delivery = apps.get_model("notifications", "Delivery")
        found["notifications.DeliveryAttempt"] = apps.get_model(
            "notifications", "DeliveryAttempt"
        ).objects.filter(delivery__execution_id__in=among)
        found["notifications.Delivery"] = delivery.objects.filter(execution_id__in=among)
        found["notifications.CompletionHook"] = apps.get_model(
            "notifications", "CompletionHook"
        ).objects.filter(execution_id__in=among)
    found.update(
        {
            "executions.ExecutionLog": ExecutionLog.objects.filter(execution_id__in=among),
            "executions.ExecutionEvent": ExecutionEvent.objects.filter(execution_id__in=among),
            "executions.ExecutionAttempt": ExecutionAttempt.objects.filter(execution_id__in=among),
            "executions.FlowStep": FlowStep.objects.filter(flow_id__in=among),
            "executions.Execution": Execution.objects.filter(pk__in=among),
        }
    )
    return found


def _letting_go(ids: list[int]) -> list[tuple[QuerySet, str]]:
    """The rows that only point at executions ``ids`` (``SET_NULL``), with the field to clear:
    a retry's ``retry_of``, a step's record of its run and of the run it reused."""
    among = _among(ids)
    return [
        (Execution.objects.filter(retry_of_id__in=among), "retry_of"),
        (FlowStep.objects.filter(execution_id__in=among), "execution"),
        (FlowStep.objects.filter(reused_from_id__in=among), "reused_from"),
    ]


def _count(units: dict[int, int]) -> Counter:
    if not units:
        return Counter()
    ids = list(units)
    return Counter({KINDS[label]: rows.count() for label, rows in _belonging(ids).items()})


def _delete(units: dict[int, int]) -> Counter:
    """Delete executions ``units`` with everything that belongs to them, in one transaction;
    rows by kind."""
    counts: Counter = Counter()
    if not units:
        return counts
    ids = list(units)
    with transaction.atomic():
        for rows, name in _letting_go(ids):
            rows.update(**{name: None})
        for label, rows in _belonging(ids).items():
            if label == "artifacts.Artifact":
                from artifacts.services import artifacts_delete

                # Their files go once this transaction commits, and stay if it rolls back.
                counts[KINDS[label]] = artifacts_delete(execution_ids=ids)
            elif label == "executions.Execution":
                # Everything that points at them is gone or let go above: one DELETE, where
                # Django's collector would look for each kind of row again.
                counts[KINDS[label]] = rows._raw_delete(rows.db)
            else:
                counts[KINDS[label]] = rows.delete()[0]
    return counts


def _celery_result_models() -> list:
    if not apps.is_installed("django_celery_results"):
        return []
    return [
        apps.get_model("django_celery_results", "TaskResult"),
        apps.get_model("django_celery_results", "GroupResult"),
    ]
