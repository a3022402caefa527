"""The dispatcher: one tick, every few seconds, that turns time into work.

celery beat (django-celery-beat's DatabaseScheduler) sends one periodic task,
``executions.dispatch`` (``executions.tasks.dispatch_tick``), every
``CONVEYOR_DISPATCH_INTERVAL`` seconds to the maintenance queue; the entry is
``CELERY_BEAT_SCHEDULE`` in config/settings.py. The task expires after one interval (a backlog of
ticks behind a busy worker is dropped, not replayed) and stores no result.

The tick is a thin orchestrator. It runs, in order:

1. the schedules' slot dispatch (``agents.schedule_dispatch.dispatch_schedules``);
2. the executions' recovery passes (``executions.recovery``): publish due delayed and held runs,
   re-publish stranded ones, reap attempts whose worker died;
   then the limits' pass (``executions.capacity.release_due``): runs waiting for a rate limit or
   an open breaker whose time has come, and slots, breakers and pauses a lost message left
   waiting;
3. the flows' pass (``executions.flows.advance_stalled``): advance flows a step's end did not
   advance, end waits that are over, time out flows past their limit;
4. the notifications' pass (``notifications.services.resend_stalled``): deliveries and
   completion hooks whose message was lost;
5. the bulk actions' pass (``executions.bulk.bulk_actions_resume``): unfinished bulk actions
   whose message was lost.

Each pass runs even if an earlier one failed (a broken pass must not stop the others); the first
error is raised again at the end so that the task is recorded as failed. Both sides learn what
they need about a waiting run from the execution's own fields (``wait_reason``, ``wait_until``)
through ``executions.selectors``, never from each other.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from agents.schedule_dispatch import SlotReport, dispatch_schedules

from . import bulk, capacity, flows, recovery

logger = logging.getLogger("conveyor.dispatch")


@dataclass
class TickReport:
    slots: SlotReport = field(default_factory=SlotReport)
    published: int = 0
    republished: int = 0
    reaped: int = 0
    released: int = 0
    flows: int = 0
    notifications: int = 0
    bulk: int = 0
    errors: int = 0
    seconds: float = 0.0

    @property
    def started(self) -> int:
        return self.slots.started

    @property
    def skipped(self):
        return self.slots.skipped

    def __bool__(self) -> bool:
        return bool(
            self.started
            or self.skipped
            or self.published
            or self.republished
            or self.reaped
            or self.released
            or self.flows
            or self.notifications
            or self.bulk
            or self.errors
            or self.slots.errors
        )


#: This process's view of how long it has seen the database without a gap (see ReaperWatch).
reaper_watch = recovery.ReaperWatch()


def _reap(at: datetime, may_reap: bool) -> int:
    return recovery.reap_lost_attempts(at=at) if may_reap else 0


def _notifications(at: datetime) -> int:
    from notifications.services import resend_stalled

    return resend_stalled(at=at)


def tick(*, at: datetime | None = None) -> TickReport:
    """Everything the dispatcher does every ``CONVEYOR_DISPATCH_INTERVAL`` seconds."""
    at = at or timezone.now()
    began = time.monotonic()
    report = TickReport()
    first_error = None
    # Asked before this tick's passes: has this process seen the database, tick after tick, for
    # a whole heartbeat timeout?
    may_reap = reaper_watch.ready(at)
    passes = (
        ("schedules", lambda: dispatch_schedules(at=at, report=report.slots)),
        ("delayed", lambda: setattr(report, "published", recovery.publish_due(at=at))),
        ("republish", lambda: setattr(report, "republished", recovery.republish_stranded(at=at))),
        ("reaper", lambda: setattr(report, "reaped", _reap(at, may_reap))),
        ("capacity", lambda: setattr(report, "released", capacity.release_due(at=at))),
        ("flows", lambda: setattr(report, "flows", flows.advance_stalled(at=at))),
        ("notifications", lambda: setattr(report, "notifications", _notifications(at))),
        ("bulk", lambda: setattr(report, "bulk", bulk.bulk_actions_resume(at=at))),
    )
    for name, run in passes:
        try:
            run()
            reaper_watch.saw_database(at)
        except Exception as exc:
            report.errors += 1
            first_error = first_error or exc
            logger.exception(
                "dispatcher pass failed", extra={"action": "dispatch_failed", "pass": name}
            )
    report.seconds = time.monotonic() - began
    if report:
        logger.info(
            "dispatcher tick",
            extra={
                "action": "dispatch_tick",
                "started": report.started,
                "skipped": sum(report.skipped.values()),
                "published": report.published,
                "republished": report.republished,
                "reaped": report.reaped,
                "released": report.released,
                "flows": report.flows,
                "notifications": report.notifications,
                "bulk": report.bulk,
                "seconds": round(report.seconds, 3),
            },
        )
    if first_error is not None:
        raise first_error
    return report
