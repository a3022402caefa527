"""Operators' periodic tasks (on the maintenance queue)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from . import backlog, baseline, rollups


@shared_task(name="ops.tasks.roll_up", ignore_result=True)
def roll_up() -> int:
    """Write the rollups of the hours (and days) that ended since the last roll, and add the
    runs that settled since to their periods (``ops.rollups.roll_up``). Sent every hour by beat
    (``conveyor-rollups``); the daily retention task rolls up too before it deletes rows."""
    return rollups.roll_up(until=timezone.now())


@shared_task(name="ops.tasks.sample_queues", ignore_result=True)
def sample_queues() -> int:
    """Write this minute's backlog sample of every queue (``ops.backlog.sample``). Sent every
    minute by beat (``conveyor-queue-samples``)."""
    return backlog.sample(now=timezone.now())


@shared_task(name="ops.tasks.check_baselines", ignore_result=True)
def check_baselines() -> int:
    """Compare each agent's last day with its usual and open or close its regressions
    (``ops.baseline.check``). Sent every five minutes by beat (``conveyor-baselines``)."""
    done = baseline.check(now=timezone.now())
    return done.opened + done.closed
