"""celery beat sends one dispatcher tick, on the maintenance queue, that expires quickly."""

import pytest
from django.conf import settings

from config.celery import app


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
