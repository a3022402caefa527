"""The dispatcher's tick: celery beat sends one, on the maintenance queue, that expires quickly;
each runs the schedules' slot dispatch and the recovery passes and reports what they did."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from config.celery import app
from executions.dispatch import tick
from executions.services import execution_request


def test_beat_sends_one_dispatcher_tick_every_interval_on_the_maintenance_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["conveyor-dispatch"]
    interval = settings.CONVEYOR_DISPATCH_INTERVAL
    assert entry["task"] == "executions.dispatch"
    assert entry["schedule"] == interval
    assert entry["options"] == {
        "queue": settings.CONVEYOR_MAINTENANCE_QUEUE,
        "expire_seconds": interval,
    }


def test_the_tick_task_is_registered_expires_and_keeps_no_result():
    app.loader.import_default_modules()
    task = app.tasks["executions.dispatch"]
    assert task.expires == settings.CONVEYOR_DISPATCH_INTERVAL
    assert task.ignore_result is True
    assert app.amqp.router.route({}, task.name)["queue"].name == (
        settings.CONVEYOR_MAINTENANCE_QUEUE
    )


@pytest.mark.django_db(transaction=True)
def test_the_database_scheduler_installs_the_tick_in_its_tables():
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    DatabaseScheduler(app=app)
    task = PeriodicTask.objects.get(name="conveyor-dispatch")
    assert task.task == "executions.dispatch" and task.enabled
    assert task.queue == settings.CONVEYOR_MAINTENANCE_QUEUE
    assert task.expire_seconds == settings.CONVEYOR_DISPATCH_INTERVAL
    assert task.interval.every == settings.CONVEYOR_DISPATCH_INTERVAL
    assert task.interval.period == "seconds"


@pytest.mark.django_db
def test_a_whole_tick_reports_what_it_did(make_agent, make_schedule):
    now = timezone.now().replace(microsecond=0)
    agent = make_agent(overlap_policy="allow")
    make_schedule(agent, interval_seconds=60, at=now - timedelta(seconds=60))
    execution_request(agent=agent, trigger="manual", not_before=now, at=now - timedelta(seconds=1))
    report = tick(at=now)
    assert (report.started, report.published, report.errors) == (1, 1, 0)
