"""Celery is configured the safe way: checked on the app the worker really loads."""

from django.conf import settings

from config.celery import app


def test_only_json_crosses_the_broker():
    assert app.conf.task_serializer == app.conf.result_serializer == "json"
    assert app.conf.accept_content == ["json"]


def test_messages_are_acknowledged_late_and_requeued_if_the_worker_dies():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_a_waiting_retry_is_never_redelivered_by_the_visibility_timeout():
    longest_wait = (
        settings.CONVEYOR_MAX_BACKOFF
        + settings.CONVEYOR_MAX_TIMEOUT
        + settings.CONVEYOR_TIME_LIMIT_GRACE
    )
    assert app.conf.broker_transport_options["visibility_timeout"] > longest_wait


def test_workers_keep_their_database_connection_between_tasks():
    from celery.fixups.django import DjangoWorkerFixup

    assert DjangoWorkerFixup(app).db_reuse_max >= 100


def test_executions_and_maintenance_have_their_own_queues():
    def queue_of(task_name):
        return app.amqp.router.route({}, task_name)["queue"].name

    assert queue_of("executions.run_execution") == settings.CONVEYOR_EXECUTIONS_QUEUE
    assert queue_of("executions.enforce_cancel") == settings.CONVEYOR_MAINTENANCE_QUEUE
    assert app.conf.result_backend == "django-db"
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
