"""What the agent page's Schedules card shows, read by a selector the page's view calls:
schedules in words with their next runs, the last slots newest first, in a fixed number of
queries whatever the number of schedules."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import SkippedSlot
from agents.schedule_selectors import RECENT_SLOTS, schedule_panel
from agents.schedule_services import schedule_create
from executions.services import execution_request

pytestmark = pytest.mark.django_db

NOW = datetime(2030, 3, 4, 12, 0, tzinfo=UTC)


def test_each_schedule_comes_in_words_with_its_next_five_runs(make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300, at=NOW)
    panel = schedule_panel(agent=agent, at=NOW)
    (row,) = panel["rows"]
    assert row.schedule == schedule and row.words
    assert row.next_runs == [NOW + timedelta(seconds=300 * n) for n in range(1, 6)]
    assert panel["overlap"] == "the slot is skipped"
    assert panel["recent"] == []


def test_the_last_slots_mix_runs_and_skips_newest_first(make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=60, at=NOW)
    for minutes in range(RECENT_SLOTS):
        execution_request(
            agent=agent,
            trigger="schedule",
            schedule=schedule,
            scheduled_for=NOW - timedelta(minutes=2 * minutes + 1),
            at=NOW,
        )
    SkippedSlot.objects.create(schedule=schedule, slot_at=NOW, reason="overlap", at=NOW)
    recent = schedule_panel(agent=agent, at=NOW)["recent"]
    assert len(recent) == RECENT_SLOTS
    assert recent[0].reason == "overlap" and recent[0].execution is None
    assert [row.slot_at for row in recent] == sorted((r.slot_at for r in recent), reverse=True)
    assert all(row.execution is not None for row in recent[1:])


def test_it_runs_the_same_queries_for_one_schedule_or_many(make_agent):
    def queries_for(agent):
        with CaptureQueriesContext(connection) as captured:
            schedule_panel(agent=agent, at=NOW)
        return len(captured)

    one, many = make_agent(name="one"), make_agent(name="many")
    schedule_create(agent=one, kind="cron", cron="0 9 * * 1-5", timezone="Europe/Paris", at=NOW)
    for hour in range(5):
        schedule_create(
            agent=many, kind="cron", cron=f"0 {hour} * * *", timezone="Europe/Paris", at=NOW
        )
    assert queries_for(one) == queries_for(many)


def test_a_cron_schedule_in_another_zone_names_its_own_zone_for_its_next_runs(make_agent):
    agent = make_agent()
    schedule_create(agent=agent, kind="cron", cron="0 9 * * *", timezone="Europe/Paris", at=NOW)
    schedule_create(agent=agent, kind="interval", interval_seconds=300, at=NOW)
    with timezone.override("America/New_York"):
        cron, interval = schedule_panel(agent=agent, at=NOW)["rows"]
    assert cron.own_zone == "Europe/Paris"
    assert interval.own_zone == ""  # an interval reads no clock
    with timezone.override("Europe/Paris"):
        cron, _ = schedule_panel(agent=agent, at=NOW)["rows"]
    assert cron.own_zone == ""  # the viewer's own
