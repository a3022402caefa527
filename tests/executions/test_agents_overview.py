"""The owner's agents at a glance (executions.selectors.agents_overview, the home page and the
agents list): each agent's last runs of the last 7 days, oldest first, at most ``spark``."""

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.selectors import agents_overview

pytestmark = pytest.mark.django_db


def test_each_agent_shows_its_last_runs_of_the_week_oldest_first(
    alice, bob, make_agent, make_execution
):
    now = timezone.now()
    busy, quiet = make_agent(alice, name="busy"), make_agent(alice, name="quiet")
    make_agent(alice, name="idle")
    make_execution(busy, "failed", at=now - timedelta(days=8))  # before the week
    for hours, status in [(10, "succeeded"), (9, "failed"), (8, "succeeded"), (7, "cancelled")]:
        make_execution(busy, status, at=now - timedelta(hours=hours))
    # Two runs created at the same instant: the later one (by id) is the newer.
    same = now - timedelta(hours=1)
    make_execution(busy, "succeeded", at=same)
    make_execution(busy, "failed", at=same)
    make_execution(quiet, "succeeded", at=now - timedelta(days=6))
    make_execution(make_agent(bob, name="busy"), "failed", at=now - timedelta(minutes=1))

    agents = {a.name: a for a in agents_overview(owner=alice, now=now, spark=3)}

    assert sorted(agents) == ["busy", "idle", "quiet"]  # alice's, not bob's
    assert agents["busy"].spark == ["cancelled", "succeeded", "failed"]
    assert agents["quiet"].spark == ["succeeded"]
    assert agents["idle"].spark == []
    everything = {a.name: a.spark for a in agents_overview(owner=alice, now=now)}
    assert everything["busy"] == [
        "succeeded",
        "failed",
        "succeeded",
        "cancelled",
        "succeeded",
        "failed",
    ]
