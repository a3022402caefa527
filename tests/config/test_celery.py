"""Celery is configured the safe way: checked on the app the worker really loads."""

import time

import pytest
from django.conf import settings

from config.celery import app


def test_only_json_crosses_the_broker():
    assert app.conf.task_serializer == app.conf.result_serializer == "json"
    assert app.conf.accept_content == ["json"]


def test_messages_are_acknowledged_late_and_requeued_if_the_worker_dies():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_a_waiting_retry_is_never_redelivered_by_the_broker():
    longest_wait = (
        settings.CONVEYOR_MAX_BACKOFF
        + settings.CONVEYOR_MAX_TIMEOUT
        + settings.CONVEYOR_TIME_LIMIT_GRACE
    )
    if app.conf.broker_url.startswith("amqp"):
        # RabbitMQ's consumer_timeout, as declared (the settings refuse a shorter one).
        assert longest_wait < settings.CONVEYOR_RABBITMQ_CONSUMER_TIMEOUT
    else:
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


def test_a_broker_connection_loss_lets_running_attempts_finish():
    # The row decides: a redelivered message finds its attempt claimed and does nothing.
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False


def test_a_stopping_worker_gives_running_attempts_a_grace_before_it_cuts_them():
    assert app.conf.worker_soft_shutdown_timeout == settings.CONVEYOR_SHUTDOWN_GRACE > 0


class Blackhole:
    """A TCP server that accepts connections and never answers: a broker behind a network that
    drops packets, as far as a client can tell."""

    def __init__(self):
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        for conn in self.held:
            conn.close()
        self.server.close()


@pytest.mark.django_db(transaction=True)
def test_publishing_at_commit_to_a_broker_that_never_answers_costs_seconds_not_a_hang(make_agent):
    """The request that creates a run publishes its message at commit. A broker that takes the
    connection and then says nothing costs it the socket timeout per try (two tries), after
    which the run waits in the database for the republish pass."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("checks the Redis transport's socket timeouts")
    from executions.services import execution_request

    agent = make_agent()
    hole = Blackhole()
    saved = {key: app.conf[key] for key in ("broker_url", "broker_write_url")}

    def reconnect():
        app.amqp._producer_pool = None
        app._pool = None

    app.conf.update(broker_url=f"redis://127.0.0.1:{hole.port}/0", broker_write_url=None)
    reconnect()
    try:
        began = time.monotonic()
        execution = execution_request(agent=agent, trigger="api")
        took = time.monotonic() - began
    finally:
        app.conf.update(saved)
        reconnect()
        hole.close()
    # Bounded by the settings: two tries of (connect + one socket timeout), plus slack. Not a
    # speed claim: without the timeouts this call never returns.
    bound = 2 * (settings.CONVEYOR_BROKER_CONNECT_TIMEOUT + settings.CONVEYOR_BROKER_SOCKET_TIMEOUT)
    assert took < bound + 5, f"the request waited {took:.1f} s on a silent broker"
    execution.refresh_from_db()
    assert (execution.status, execution.wait_reason) == ("queued", "broker")
