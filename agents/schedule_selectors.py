"""What the agent page's Schedules card shows, read for the page's view.

Each schedule in words with its next run times, the coming daylight-saving change that moves
its runs (if any), and the agent's last scheduled slots: the executions they started and the
slots that were skipped, with the reason. The same queries whatever the number of schedules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from executions.models import Execution

from . import schedule_services as services
from .models import Agent, Schedule, SkippedSlot
from .schedules import DstNotice

RECENT_SLOTS = 8


# What happens to a slot that comes while a run of the agent is still active.
OVERLAP_WORDS = {
    Agent.Overlap.SKIP: "the slot is skipped",
    Agent.Overlap.ALLOW: "it starts anyway",
    Agent.Overlap.QUEUE: "it waits for the active run to finish",
}


@dataclass(frozen=True)
class ScheduleRow:
    schedule: Schedule
    words: str
    next_runs: list[datetime]
    notice: DstNotice | None
    # The schedule's own zone when its times are read on another clock than the viewer's
    # (a cron schedule in another zone): its next runs are shown on both.
    own_zone: str = ""

    @property
    def input_summary(self) -> str:
        text = json.dumps(self.schedule.input, ensure_ascii=False, separators=(", ", ": "))
        return text if len(text) <= 60 else text[:59] + "…"


@dataclass(frozen=True)
class SlotRow:
    slot_at: datetime
    execution: Execution | None = None
    reason: str = ""


def schedule_panel(*, agent: Agent, at: datetime) -> dict:
    """The card's rows, its last slots (newest first), the overlap policy in words and the
    time zone its times are shown in (the viewer's; a cron schedule's own zone as well)."""
    rows = []
    viewer_zone = timezone.get_current_timezone_name()
    for schedule in agent.schedules.order_by("created_at"):
        notices = services.schedule_dst_notices(schedule, at=at)
        rows.append(
            ScheduleRow(
                schedule=schedule,
                words=services.describe(schedule),
                next_runs=services.schedule_next_runs(schedule, at=at, count=5),
                notice=notices[0] if notices else None,
                own_zone=schedule.timezone
                if schedule.kind == Schedule.Kind.CRON and schedule.timezone != viewer_zone
                else "",
            )
        )
    executions = (
        Execution.objects.filter(agent=agent, scheduled_for__isnull=False)
        .order_by("-scheduled_for", "-id")
        .only("uuid", "status", "attempt", "max_attempts", "scheduled_for", "created_at")[
            :RECENT_SLOTS
        ]
    )
    skipped = SkippedSlot.objects.filter(schedule__agent=agent).order_by("-slot_at")[:RECENT_SLOTS]
    recent = sorted(
        [SlotRow(e.scheduled_for, execution=e) for e in executions]
        + [SlotRow(s.slot_at, reason=s.reason) for s in skipped],
        key=lambda row: row.slot_at,
        reverse=True,
    )[:RECENT_SLOTS]
    return {
        "rows": rows,
        "recent": recent,
        "overlap": OVERLAP_WORDS.get(agent.overlap_policy, agent.overlap_policy),
        "zone": viewer_zone,
    }
