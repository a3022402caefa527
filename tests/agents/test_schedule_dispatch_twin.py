"""The dispatcher's Postgres path is held to its ORM path, row for row.

On Postgres a dispatcher batch writes its runs and their events in one statement
(``executions_insert``: a slot another tick took is left out by ON CONFLICT) and advances its
schedules in one UPDATE; elsewhere each slot is written in its own savepoint and the schedules
by ``bulk_update``. The same set of schedules, in every situation a slot can meet, is built
twice on one database and dispatched once by each path at the same time; every row written (the
runs, their events, the skipped slots, the schedules) must be equal apart from what names a
row, and the two reports too.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from agents.models import Schedule, SkippedSlot
from agents.schedule_dispatch import dispatch_schedules
from agents.services import agent_pause
from executions.models import Execution, ExecutionEvent
from executions.services import execution_claim, execution_request
from tests.conftest import utc

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the one-statement path exists on Postgres only"
    ),
]

T0 = utc(2026, 6, 1, 12, 0, 0)
SLOT = T0 + timedelta(seconds=60)
AT = SLOT + timedelta(seconds=5)
# What names a row rather than describing it; everything else is compared.
IDENTITY = {"id", "uuid", "celery_task_id", "agent_id", "owner_id", "schedule_id", "execution_id"}


def world(side: str, make_agent, make_schedule) -> list[Schedule]:
    """Schedules due at AT in every situation a slot can meet, their names starting with side."""
    agent = lambda name, **fields: make_agent(name=f"{side}-{name}", **fields)  # noqa: E731
    schedules = [
        make_schedule(agent("plain"), input={"n": 1}, at=T0),
        make_schedule(agent("allow", overlap_policy="allow"), at=T0),
        make_schedule(agent("priority", priority=7, timeout=45), input=[1, 2], at=T0),
    ]
    # Busy agents: skip, queue (held), allow.
    for name, policy in (("skip", "skip"), ("queue", "queue"), ("busy-allow", "allow")):
        busy = agent(name, overlap_policy=policy)
        running = execution_request(agent=busy, trigger="api", at=T0)
        assert execution_claim(execution_id=running.pk, expected_attempt=0, worker="w", at=T0)
        schedules.append(make_schedule(busy, at=T0))
    # Two schedules of one agent due together: one run, the other slot skipped.
    both = agent("two-at-once")
    schedules += [make_schedule(both, at=T0), make_schedule(both, at=T0)]
    # A paused agent; a slot another tick already started; catch-up after downtime.
    paused = agent("paused")
    schedules.append(make_schedule(paused, at=T0))
    agent_pause(agent=paused)
    taken = make_schedule(agent("taken"), at=T0)
    execution_request(
        agent=taken.agent, trigger="schedule", schedule=taken, scheduled_for=SLOT, at=T0
    )
    schedules.append(taken)
    schedules.append(
        make_schedule(
            agent("caught-up"),
            interval_seconds=600,
            catch_up="latest",
            at=T0 - timedelta(hours=1),
        )
    )
    # A few slots a little late, each within the grace: several runs of one schedule.
    schedules.append(
        make_schedule(agent("every-20s", overlap_policy="allow"), interval_seconds=20, at=T0)
    )
    return schedules


def rows(schedules: list[Schedule]) -> list[dict]:
    def values(queryset, order="id"):
        return [
            {k: v for k, v in row.items() if k not in IDENTITY}
            for row in queryset.order_by(order).values()
        ]

    found = []
    for schedule in schedules:
        runs = Execution.objects.filter(schedule=schedule)
        # The schedule rows were created by the test, each world at its own time.
        this = values(Schedule.objects.filter(pk=schedule.pk))
        for row in this:
            del row["created_at"], row["updated_at"]
        found.append(
            {
                "schedule": this,
                "runs": values(runs, "scheduled_for"),
                "events": values(ExecutionEvent.objects.filter(execution__in=runs), "at"),
                "skipped": values(SkippedSlot.objects.filter(schedule=schedule), "slot_at"),
            }
        )
    return found


@override_settings(CONVEYOR_SCHEDULE_MISFIRE_GRACE=60)
def test_both_paths_write_the_same_rows(make_agent, make_schedule, settings):
    written, reports = {}, {}
    for fastpath in (True, False):
        settings.CONVEYOR_FASTPATH = fastpath
        schedules = world(f"fast-{fastpath}", make_agent, make_schedule)
        with CaptureQueriesContext(connection) as queries:
            report = dispatch_schedules(at=AT)
        # The switch really switches: only the Postgres path sends the one-statement insert.
        assert any(q["sql"].startswith("WITH created AS") for q in queries) == fastpath
        written[fastpath] = rows(schedules)
        reports[fastpath] = (report.started, dict(report.skipped), report.errors)

    assert reports[True] == reports[False]
    assert reports[True][0] >= 8  # the situations above start runs, not only skip them
    fast, orm = written[True], written[False]
    for number, (a, b) in enumerate(zip(fast, orm, strict=True)):
        for table in ("schedule", "runs", "events", "skipped"):
            assert len(a[table]) == len(b[table]), (number, table, a[table], b[table])
            for x, y in zip(a[table], b[table], strict=True):
                differing = {k: (x[k], y.get(k)) for k in x if repr(x[k]) != repr(y.get(k))}
                assert not differing, f"schedule {number} {table}: fast vs ORM {differing}"
