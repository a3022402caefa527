"""Bulk actions: retry or cancel every execution of an owner that a filter selects.

1. :func:`bulk_preview` counts what an action would do ("This will retry 183 executions"),
   with the executions the filter selects that it leaves out and why.
2. :func:`bulk_action_create` records the action (who asked, the filter, the set's bound) and
   sends ``executions.bulk_action`` once the transaction commits.
3. :func:`bulk_action_run` (the task's body) goes through the set in batches of ``BATCH``, each
   in its own transaction, calling the one service of each verb per execution
   (``execution_retry``, ``execution_cancel``): the rules of a single retry or cancel apply as
   they are. A refusal (already retried, already finished, agent paused) is counted as
   skipped, with its reason.

The set is fixed at creation: the executions that match the filter and existed then
(``BulkAction.upto_id``); runs that fail afterwards are not swept in. Each batch selects again
by the filter, the bound and how far the action has gone (``last_id``), under a compare-and-set
on the action's row: a task sent twice, or restarted after a crash, goes on where the last
committed batch ended, and a finished action does nothing more. Each batch records what it made
or changed (``BulkAction.execution_ids``: the retries it created, the executions it cancelled),
which the list's filter ``bulk=<id>`` shows.

An action with nothing to do is not created (:func:`bulk_action_create` refuses it with the
preview's words). A second action with the same filter acts only on what is new since the first:
a retried execution is not retried again (the service refuses, and the selection leaves it out),
a finished one is not cancelled; but the retries the first one created are executions too, and
those that failed in turn are retried by the second.

Owners act on their own executions only, as the executions page and the API list them (staff
included: what the admin shows is not in reach of a bulk action).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.utils import timezone

from agents.kinds.base import InvalidInputError

from .filters import InvalidFilter, filter_executions, normalised_filter
from .models import BulkAction, Execution
from .services import ExecutionRefused, execution_cancel, execution_retry

logger = logging.getLogger("conveyor.executions")

Status = Execution.Status
Action = BulkAction.Action

#: Executions per batch (one transaction each).
BATCH = 100
#: The most executions one action may cover: narrow the filter, or run several.
BULK_MAX = 10_000
#: Seconds a task works before it sends itself again, so that the dispatcher's ticks waiting on
#: the maintenance queue go first.
RUN_SECONDS = 5
#: An unfinished action whose batches have not moved for this long has lost its task: the
#: dispatcher sends it again (:func:`bulk_actions_resume`).
STALE_AFTER = timedelta(minutes=2)

RETRYABLE = (Status.FAILED, Status.CANCELLED)

#: Why an execution was skipped or failed, in words (``BulkAction.reasons``' codes).
REASONS = {
    "already_retried": "already retried",
    "not_retryable": "no longer failed or cancelled",
    "already_finished": "had already finished",
    "agent_paused": "their agent is paused",
    "agent_deleted": "their agent was deleted",
    "invalid_input": "their input no longer fits their agent",
    "busy": "kept changing",
    "changed": "no longer matched when their turn came",
}


class BulkRefused(Exception):
    """An action that cannot be made as asked: nothing to do (HTTP 409 in the API), too many
    executions, an unknown action (422)."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


def checked_action(action: str) -> str:
    """``action`` if it is one (retry, cancel); else :class:`BulkRefused` naming it."""
    if action not in Action.values:
        choices = " or ".join(Action.values)
        raise BulkRefused(
            f"Unknown action “{str(action)[:50]}”: give {choices}."
            if action
            else f"Choose an action: {choices}.",
            code="unknown_action",
        )
    return action


def _retried() -> Exists:
    return Exists(Execution.objects.filter(retry_of=OuterRef("pk")))


def bulk_selection(*, owner, filter: dict[str, Any], upto_id: int):
    """The owner's executions that ``filter`` selects, up to ``upto_id`` (the list's rows)."""
    return filter_executions(Execution.objects.filter(owner=owner, pk__lte=upto_id), data=filter)


def applies(action: str) -> Q:
    """The executions of a selection that ``action`` acts on: failed or cancelled ones not yet
    retried, for a retry (a flow's steps are retried through their flow, which runs the failed
    step again); queued, retrying and running ones, for a cancel. Needs ``was_retried``."""
    if action == Action.RETRY:
        return Q(status__in=RETRYABLE, parent__isnull=True, was_retried=False)
    return Q(status__in=Execution.ACTIVE_STATUSES)


def bulk_candidates(*, owner, action: str, filter: dict[str, Any], upto_id: int):
    """What the action still has to go through, in id order."""
    return (
        bulk_selection(owner=owner, filter=filter, upto_id=upto_id)
        .annotate(was_retried=_retried())
        .filter(applies(action))
        .order_by("pk")
    )


def _bound() -> int:
    """The newest execution's id now: the bound of a set fixed now."""
    return Execution.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


@dataclass(frozen=True)
class BulkPreview:
    """What an action would do now."""

    action: str
    #: The filter, normalised (as it would be stored).
    filter: dict[str, Any]
    #: Executions the filter selects (what the list shows).
    matching: int
    #: Of those, the ones the action acts on.
    count: int
    #: Left out: in a status the action does not apply to (succeeded, or not failed ...).
    other_status: int = 0
    #: Left out (retry): already retried once.
    already_retried: int = 0
    #: Left out (retry): steps of a flow.
    steps: int = 0
    upto_id: int = 0

    @property
    def too_many(self) -> bool:
        return self.count > BULK_MAX

    @property
    def headline(self) -> str:
        """ "This will retry 183 executions.", or why there is nothing to do: "Nothing to
        retry: the 6 executions this filter selects are already retried." """
        verb = "retry" if self.action == Action.RETRY else "cancel"
        if not self.count:
            return f"Nothing to {verb}: {self._why_nothing()}."
        noun = "execution" if self.count == 1 else "executions"
        return f"This will {verb} {self.count} {noun}."

    def _why_nothing(self) -> str:
        if not self.matching:
            return "this filter selects no executions"
        if self.matching == 1:
            whole = "the execution this filter selects"
        else:
            whole = f"the {self.matching} executions this filter selects"
        parts = self.left_out
        if len(parts) == 1:
            # "6 are already retried" -> "are already retried": the whole set is.
            return f"{whole} {parts[0].split(' ', 1)[1]}"
        return f"of {whole}, {', '.join(parts[:-1])} and {parts[-1]}"

    @property
    def left_out(self) -> list[str]:
        """Sentences about what the filter selects but the action leaves alone."""
        parts = []
        if self.already_retried:
            parts.append(_count(self.already_retried, "already retried"))
        if self.steps:
            parts.append(_count(self.steps, "a flow's step (retrying its flow runs it again)"))
        if self.other_status:
            what = (
                "neither failed nor cancelled"
                if self.action == Action.RETRY
                else "already finished"
            )
            parts.append(_count(self.other_status, what))
        return parts


def _count(n: int, what: str) -> str:
    return f"{n} {'is' if n == 1 else 'are'} {what}" if n else ""


def _check_owned(filter: dict[str, Any], *, owner) -> None:
    """An agent or bulk action the filter names must be the owner's: a stale or mistyped id
    is refused by name rather than counted as "nothing to do"."""
    from agents.models import Agent

    agents, actions = Agent.objects.filter(owner=owner), BulkAction.objects.filter(owner=owner)
    if "agent" in filter and not agents.filter(uuid=filter["agent"]).exists():
        raise InvalidFilter(details={"filter.agent": [NO_AGENT]})
    if "bulk" in filter and not actions.filter(uuid=filter["bulk"]).exists():
        raise InvalidFilter(details={"filter.bulk": [NO_BULK]})


NO_AGENT = "No agent of yours has this id."
NO_BULK = "No bulk action of yours has this id."


def bulk_preview(*, owner, action: str, filter: dict[str, Any]) -> BulkPreview:
    """Count what ``action`` would do to the owner's executions that ``filter`` selects now.

    Raises ``executions.filters.InvalidFilter`` (a value that does not parse, an unknown name,
    a second value of a name that takes one, an agent or bulk action that is not the owner's)
    and :class:`BulkRefused` (an unknown action). One query for the counts."""
    action = checked_action(action)
    stored = normalised_filter(filter)
    _check_owned(stored, owner=owner)
    upto_id = _bound()
    selection = bulk_selection(owner=owner, filter=stored, upto_id=upto_id).annotate(
        was_retried=_retried()
    )
    retryable = Q(status__in=RETRYABLE)
    counts = selection.aggregate(
        matching=Count("pk"),
        count=Count("pk", filter=applies(action)),
        already_retried=Count("pk", filter=retryable & Q(was_retried=True)),
        steps=Count("pk", filter=retryable & Q(was_retried=False, parent__isnull=False)),
    )
    if action == Action.RETRY:
        other = counts["matching"] - counts["count"] - counts["already_retried"] - counts["steps"]
        already, steps = counts["already_retried"], counts["steps"]
    else:
        other, already, steps = counts["matching"] - counts["count"], 0, 0
    return BulkPreview(
        action=action,
        filter=stored,
        matching=counts["matching"],
        count=counts["count"],
        other_status=other,
        already_retried=already,
        steps=steps,
        upto_id=upto_id,
    )


def bulk_action_create(
    *,
    owner,
    action: str,
    filter: dict[str, Any],
    via: str,
    previewed: int | None = None,
    at: datetime | None = None,
) -> BulkAction:
    """Record a bulk action on the owner's executions that ``filter`` selects now, and send it
    to a worker once the transaction commits.

    Raises ``InvalidFilter``, and :class:`BulkRefused` for an unknown action, more than
    ``BULK_MAX`` executions, or none to act on (``nothing_to_do``, with the preview's words:
    "Nothing to retry: the 6 executions this filter selects are already retried."), so that
    asking again for what is done records no empty action."""
    at = at or timezone.now()
    preview = bulk_preview(owner=owner, action=action, filter=filter)
    if not preview.count:
        raise BulkRefused(preview.headline, code="nothing_to_do")
    if preview.too_many:
        raise BulkRefused(
            f"{preview.count} executions match; one bulk action covers at most {BULK_MAX}. "
            "Narrow the filter (a shorter time range, one agent) and run it in parts.",
            code="too_many",
        )
    bulk = BulkAction.objects.create(
        owner=owner,
        action=preview.action,
        via=via,
        filter=preview.filter,
        upto_id=preview.upto_id,
        previewed=previewed,
        total=preview.count,
        created_at=at,
        updated_at=at,
    )
    _send_on_commit(bulk.pk)
    logger.info(
        "bulk action created",
        extra={
            "action": "bulk_action_created",
            "bulk_action_id": str(bulk.uuid),
            "bulk": bulk.action,
            "total": bulk.total,
            "by": owner.get_username(),
        },
    )
    return bulk


def _send_on_commit(bulk_id: int) -> None:
    def send_bulk_action(bulk_id=bulk_id):  # named: Django logs a robust callback's failure
        from django.conf import settings

        from .tasks import run_bulk_action

        run_bulk_action.apply_async(args=[bulk_id], queue=settings.CONVEYOR_MAINTENANCE_QUEUE)

    transaction.on_commit(send_bulk_action, robust=True)


def bulk_action_run(*, bulk_id: int, max_seconds: float = RUN_SECONDS, batch: int = BATCH) -> bool:
    """Go through the action's executions in batches for up to ``max_seconds``; returns
    whether the action is over (done, failed, or not found), False when some are left.

    1. ``pending`` → ``running`` (compare-and-set; a running one goes on).
    2. Each batch, in one transaction: the next ``batch`` executions after ``last_id`` that the
       action still applies to; the service per execution, in a savepoint of its own; then the
       counts and ``last_id`` written with a compare-and-set on the ``last_id`` it started from.
       Another copy of the task that got there first makes this batch roll back and stop.
    3. No execution left: ``done``. Those counted at creation that no longer matched when their
       turn came (finished, retried meanwhile) are counted as skipped.
    """
    began = time.monotonic()
    now = timezone.now()
    BulkAction.objects.filter(pk=bulk_id, status=BulkAction.Status.PENDING).update(
        status=BulkAction.Status.RUNNING, started_at=now, updated_at=now
    )
    while True:
        over = _run_batch(bulk_id, batch)
        if over is not None:
            return over
        if time.monotonic() - began >= max_seconds:
            return False


def _run_batch(bulk_id: int, size: int) -> bool | None:
    """One batch; True/False when the action is over (done, or taken by another copy), None
    when there may be more."""
    with transaction.atomic():
        bulk = (
            BulkAction.objects.select_for_update(of=("self",))
            .select_related("owner")
            .filter(pk=bulk_id, status=BulkAction.Status.RUNNING)
            .first()
        )
        if bulk is None:
            return True
        rows = list(
            bulk_candidates(
                owner=bulk.owner, action=bulk.action, filter=bulk.filter, upto_id=bulk.upto_id
            )
            .filter(pk__gt=bulk.last_id)
            .select_related("agent")[:size]
        )
        now = timezone.now()
        guard = BulkAction.objects.filter(
            pk=bulk.pk, status=BulkAction.Status.RUNNING, last_id=bulk.last_id
        )
        if not rows:
            left = max(0, bulk.total - bulk.processed)
            reasons = _merged(bulk.reasons, {"changed": left} if left else {})
            won = guard.update(
                status=BulkAction.Status.DONE,
                skipped=F("skipped") + left,
                reasons=reasons,
                finished_at=now,
                updated_at=now,
            )
            if won:
                logger.info(
                    "bulk action done",
                    extra={
                        "action": "bulk_action_done",
                        "bulk_action_id": str(bulk.uuid),
                        "done": bulk.done,
                        "skipped": bulk.skipped + left,
                        "failed": bulk.failed,
                    },
                )
            return True
        by = f"{bulk.owner.get_username()} (bulk {bulk.action})"
        counts = {"done": 0, "skipped": 0, "failed": 0}
        reasons: dict[str, int] = {}
        made: list[int] = []
        for execution in rows:
            outcome, code, made_id = _act(bulk.action, execution, by=by)
            counts[outcome] += 1
            if code:
                reasons[code] = reasons.get(code, 0) + 1
            if made_id is not None:
                made.append(made_id)
        won = guard.update(
            execution_ids=[*(bulk.execution_ids or []), *made],
            done=F("done") + counts["done"],
            skipped=F("skipped") + counts["skipped"],
            failed=F("failed") + counts["failed"],
            reasons=_merged(bulk.reasons, reasons),
            last_id=rows[-1].pk,
            updated_at=now,
        )
        if not won:
            # Another copy of the task went through this batch first: undo ours.
            transaction.set_rollback(True)
            return True
    return None


def _merged(old: dict, new: dict) -> dict:
    merged = dict(old or {})
    for code, n in new.items():
        merged[code] = merged.get(code, 0) + n
    return merged


def _act(action: str, execution: Execution, *, by: str) -> tuple[str, str, int | None]:
    """Retry or cancel one execution through its service: ("done" | "skipped" | "failed",
    the reason's code, the id of the execution it made or changed: the retry, the cancelled
    one)."""
    try:
        with transaction.atomic():  # a refusal half-way leaves the rest of the batch intact
            if action == Action.RETRY:
                made = execution_retry(execution=execution, by=by).pk
            else:
                execution_cancel(execution=execution, by=by)
                made = execution.pk
    except ExecutionRefused as exc:
        return "skipped", exc.code, None
    except InvalidInputError:
        return "failed", "invalid_input", None
    return "done", "", made


def bulk_action_fail(*, bulk_id: int, error: str) -> bool:
    """Stop an action that an unexpected error interrupted; what its batches did stays done."""
    now = timezone.now()
    return bool(
        BulkAction.objects.filter(
            pk=bulk_id, status__in=(BulkAction.Status.PENDING, BulkAction.Status.RUNNING)
        ).update(
            status=BulkAction.Status.FAILED,
            error=error[:300],
            finished_at=now,
            updated_at=now,
        )
    )


def bulk_actions_resume(*, at: datetime | None = None) -> int:
    """Send again the unfinished actions whose batches have not moved for ``STALE_AFTER`` (their
    message was lost with a broker or a worker). A copy that finds the work done does nothing.
    Returns how many were sent."""
    at = at or timezone.now()
    stale = list(
        BulkAction.objects.filter(
            status__in=(BulkAction.Status.PENDING, BulkAction.Status.RUNNING),
            updated_at__lt=at - STALE_AFTER,
        ).values_list("pk", flat=True)[:100]
    )
    for bulk_id in stale:
        # Stamped now, so the next tick does not send it again while this copy waits its turn.
        BulkAction.objects.filter(pk=bulk_id).update(updated_at=at)
        _send_on_commit(bulk_id)
    return len(stale)


def reason_words(reasons: dict[str, int]) -> list[str]:
    """ "17 already retried", "3: their agent is paused" """
    return [f"{n} {REASONS.get(code, code.replace('_', ' '))}" for code, n in reasons.items() if n]
