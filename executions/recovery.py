"""The executions' recovery passes: nothing waits forever, nothing stays running without a worker.

The dispatcher's tick (``executions.dispatch.tick``) runs these after the schedules' slot
dispatch. Each reads why and until when an execution waits from its own fields
(``wait_reason``, ``wait_until``, ``published_at``) and changes it through a service, so every
pass is a compare-and-set and safe on several machines at once.

1. **Publish due waits** (:func:`publish_due`): an execution created with ``not_before`` in the
   future waits ``delayed`` in the database, not in the broker (a Celery ETA longer than the
   broker's visibility timeout would be redelivered, and a database row survives a broker
   restart). When it is due it is handed to the broker. A ``held`` slot (overlap policy
   ``queue``) is handed over when no earlier run of its agent is in the way.
2. **Re-publish stranded executions** (:func:`republish_stranded`): queued executions handed to
   the broker more than ``CONVEYOR_REPUBLISH_AFTER`` seconds ago and never claimed (the broker
   was down at commit, or lost the message), and ``retrying`` ones whose retry is that much
   overdue (the worker holding the retry's message died). The worker's claim checks status and
   attempt, so a duplicate message does nothing. The wait before each re-publish of a queued
   run doubles with the time it had already waited, so a long but healthy backlog costs a
   handful of duplicates per execution, not one per minute.
3. **Reap lost attempts** (:func:`reap_lost_attempts`): an execution still ``running`` whose
   heartbeat (``executions.heartbeat``: stamped by its worker every
   ``CONVEYOR_HEARTBEAT_INTERVAL`` seconds while the agent runs) is older than
   ``CONVEYOR_HEARTBEAT_TIMEOUT`` seconds lost its worker. ``services.attempt_fail`` closes the
   attempt as ``lost`` and retries or fails the execution, in the same words as any other failed
   attempt. A slow but live attempt keeps stamping and is never taken; an attempt past its time
   limit is the worker's to stop (soft, then hard limit), not the reaper's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import (
    DateTimeField,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Value,
)
from django.db.models.functions import Coalesce, Greatest

from .errors import CATEGORIES, Category, ClassifiedError
from .humanize import seconds_in_words
from .models import Execution
from .selectors import held_in_the_way
from .services import attempt_fail, execution_publish

logger = logging.getLogger("conveyor.recovery")
Status = Execution.Status
WaitReason = Execution.WaitReason

# Rows handled per pass and per tick.
PASS_LIMIT = 1000


def publish_due(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Hand due delayed executions, and held slots whose turn has come, to the broker."""
    queued = Execution.objects.filter(status=Status.QUEUED).select_related("agent")
    published = 0
    delayed = queued.filter(wait_reason=WaitReason.DELAYED, wait_until__lte=at)
    for execution in delayed.order_by("wait_until", "pk")[:limit]:
        published += _publish(execution, at=at)
    # Held slots: per agent, only the oldest can be next.
    seen: set[int] = set()
    for execution in queued.filter(wait_reason=WaitReason.HELD).order_by("pk")[:limit]:
        if execution.agent_id in seen:
            continue
        seen.add(execution.agent_id)
        in_the_way = held_in_the_way(execution, at=at)
        if execution.agent.overlap_policy == execution.agent.Overlap.QUEUE and (
            in_the_way.exists()
        ):
            continue
        published += _publish(execution, at=at)
    return published


def _publish(execution: Execution, *, at: datetime) -> bool:
    reason = execution.wait_reason
    won = execution_publish(execution=execution, at=at)
    if won:
        logger.info(
            "waiting execution handed to the broker",
            extra={
                "action": "execution_published",
                "execution_id": str(execution.uuid),
                "wait_reason": reason,
            },
        )
    return won


def republish_stranded(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Publish again what was handed to the broker but never claimed.

    * queued (waiting ``broker``): last published at least ``CONVEYOR_REPUBLISH_AFTER``
      seconds ago, and at least as long ago as it had already waited then (so the waits double:
      60 s, 2 min, 4 min... of a backlog cost a few duplicates);
    * retrying: the retry was due, and last published, at least ``CONVEYOR_REPUBLISH_AFTER``
      seconds ago.
    """
    cutoff = at - timedelta(seconds=settings.CONVEYOR_REPUBLISH_AFTER)
    queued = (
        Execution.objects.filter(status=Status.QUEUED, wait_reason=WaitReason.BROKER)
        .annotate(first_due=Greatest("created_at", Coalesce("not_before", "created_at")))
        .annotate(
            waited=ExpressionWrapper(
                F("published_at") - F("first_due"), output_field=DurationField()
            ),
            since_sent=ExpressionWrapper(
                Value(at, output_field=DateTimeField()) - F("published_at"),
                output_field=DurationField(),
            ),
        )
        .filter(published_at__lte=cutoff, waited__lte=F("since_sent"))
    )
    retrying = Execution.objects.filter(status=Status.RETRYING, wait_until__lte=cutoff).filter(
        Q(published_at__isnull=True) | Q(published_at__lte=cutoff)
    )
    republished = 0
    for source in (queued, retrying):
        for execution in source.select_related("agent").order_by("pk")[:limit]:
            if execution_publish(execution=execution, at=at):
                republished += 1
                logger.warning(
                    "stranded execution published again",
                    extra={
                        "action": "execution_republished",
                        "execution_id": str(execution.uuid),
                        "status": execution.status,
                        "attempt": execution.attempt,
                    },
                )
    return republished


def reap_lost_attempts(*, at: datetime, limit: int = PASS_LIMIT) -> int:
    """Finish the attempts whose worker died: retry them, or fail them as ``worker_lost``.

    An attempt is taken for lost when its heartbeat (stamped by its worker every
    ``CONVEYOR_HEARTBEAT_INTERVAL`` seconds while the agent runs) is older than
    ``CONVEYOR_HEARTBEAT_TIMEOUT`` seconds. The caller makes sure it has itself been able to see
    the database for that long (``ReaperWatch``): after an outage both sides resume together.
    """
    silent_since = at - timedelta(seconds=settings.CONVEYOR_HEARTBEAT_TIMEOUT)
    candidates = (
        # A flow runs no code of its own while it waits for its steps (wait reason steps or
        # pause): it has no heartbeat to lose.
        Execution.objects.filter(status=Status.RUNNING, wait_reason=WaitReason.NONE)
        .filter(
            Q(heartbeat_at__lt=silent_since)
            | Q(heartbeat_at__isnull=True, started_at__lt=silent_since)
        )
        .select_related("agent")
        .order_by("pk")[:limit]
    )
    return sum(reap(execution, at=at) for execution in candidates)


def reap(execution: Execution, *, at: datetime) -> bool:
    """Close a running execution's lost attempt and retry or fail it. Returns whether it won."""
    number = execution.attempt
    last_sign = execution.heartbeat_at or execution.started_at or at
    silent_for = max((at - last_sign).total_seconds(), 0)
    error = ClassifiedError(
        Category.WORKER_LOST,
        CATEGORIES[Category.WORKER_LOST].retryable,
        f"The worker running attempt {number} stopped before the attempt finished (it was "
        f"killed, or its machine restarted).",
        f"Attempt {number} sent no heartbeat for {seconds_in_words(silent_for)} (a live worker "
        f"sends one every {seconds_in_words(settings.CONVEYOR_HEARTBEAT_INTERVAL)}); its worker "
        f"is presumed lost.",
    )
    attempt_fail(execution=execution, number=number, error=error, at=at, publish_retry=True)
    won = execution.status != Status.RUNNING
    if won:
        logger.warning(
            "lost attempt reaped",
            extra={
                "action": "execution_reaped",
                "execution_id": str(execution.uuid),
                "attempt": number,
                "status": execution.status,
                "silent_seconds": round(silent_for, 1),
            },
        )
    return won


class ReaperWatch:
    """Whether this process has watched the database long enough to trust a silent heartbeat.

    A heartbeat goes silent for two reasons: its worker died, or the database could not take it
    (restarting, unreachable). In the second case the dispatcher could not run either; when both
    come back, the first passes would see every running attempt as silent. So the reaper acts
    only once its own passes have run without a gap of more than half the heartbeat timeout for
    at least the whole timeout: by then every live worker has stamped again. A new process (a
    restarted maintenance worker) waits the same way. Kept in the process: with several
    maintenance workers each waits for itself, which only ever delays a reap.
    """

    def __init__(self) -> None:
        self.since: datetime | None = None
        self.last: datetime | None = None

    def ready(self, at: datetime) -> bool:
        timeout = timedelta(seconds=settings.CONVEYOR_HEARTBEAT_TIMEOUT)
        if (
            self.since is None
            or self.last is None
            or not (0 <= (at - self.last).total_seconds() <= timeout.total_seconds() / 2)
        ):
            self.since = at
        return at - self.since >= timeout

    def saw_database(self, at: datetime) -> None:
        """Record a pass that reached the database at ``at``."""
        self.last = at
