"""Queue depth and the broker's health, read from whichever broker Celery uses.

Redis: one list per queue and priority step, and a hash of unacknowledged messages. RabbitMQ: a
passive declare of each queue, which answers with the count of messages ready for a worker;
the unacknowledged ones are not counted, so that figure is unknown (None) there.

These tests publish real messages through Celery to queues of their own that nobody consumes,
on the suite's Redis (``REDIS_URL``, or the embedded one) and on a real RabbitMQ (``BROKER_URL``
when it is an amqp:// URL, otherwise 127.0.0.1:5672 as guest). The RabbitMQ cases are skipped,
saying why, when no RabbitMQ answers there.
"""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app
from ops import system
from tests.stack import free_port

pytestmark = pytest.mark.django_db

RABBITMQ_URL = (
    os.environ["BROKER_URL"]
    if system.is_amqp(os.environ.get("BROKER_URL", ""))
    else "amqp://guest:guest@127.0.0.1:5672//"
)


def _shown(url: str) -> str:
    """The URL without its password, for skip reasons."""
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


@functools.cache
def _rabbitmq_answers() -> str:
    """ "ok", or why RabbitMQ did not answer (asked once per session)."""
    try:
        with system.amqp_connection(RABBITMQ_URL):
            pass
    except Exception as exc:  # any failure to connect means the same: no RabbitMQ here
        return f"{type(exc).__name__}: {exc}"
    return "ok"


class Broker:
    """A broker under test: ops.system reads it (through ``CELERY_BROKER_URL``) and the test
    publishes to it; the queues it names are removed at the end."""

    def __init__(self, kind: str, url: str, settings):
        self.kind = kind
        self.url = url
        self.connection = Connection(url)
        self.queues: list[str] = []
        self.settings = settings

    def queue(self, suffix: str = "") -> str:
        """A queue name of this test only, declared for this test (agents may use it)."""
        name = f"ops-test-{uuid.uuid4().hex[:8]}{suffix}"
        self.queues.append(name)
        self.settings.CONVEYOR_QUEUES = {
            **self.settings.CONVEYOR_QUEUES,
            name: {"description": "", "concurrency": None},
        }
        return name

    def publish(self, queue: str, priority: int | None = None) -> None:
        options = {} if priority is None else {"priority": priority}
        # A task name no worker knows: the message only has to wait in the queue.
        app.send_task("ops.tests.never_run", queue=queue, connection=self.connection, **options)

    def remove_queues(self) -> None:
        if self.kind == "redis":
            client = system.redis_client(self.url)
            for name in self.queues:
                client.delete(*system.queue_keys(name))
                client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
            client.close()
        else:
            channel = self.connection.channel()
            for name in self.queues:
                channel.queue_delete(name)
                channel.exchange_delete(name)  # Celery declares one per queue, named after it
        self.connection.release()


def _redis_broker_url() -> str:
    return settings.REDIS_URL.replace("unix://", "redis+socket://", 1)


@pytest.fixture
def redis_broker(settings):
    """The suite's Redis as the broker (whatever BROKER_URL the suite runs with)."""
    settings.CELERY_BROKER_URL = _redis_broker_url()
    broker = Broker("redis", settings.CELERY_BROKER_URL, settings)
    yield broker
    broker.remove_queues()


@pytest.fixture
def rabbitmq(settings):
    """A real RabbitMQ as the broker; skipped when none answers."""
    answer = _rabbitmq_answers()
    if answer != "ok":
        pytest.skip(
            f"RabbitMQ does not answer at {_shown(RABBITMQ_URL)} ({answer}); set "
            "BROKER_URL=amqp://... to test against another one"
        )
    settings.CELERY_BROKER_URL = RABBITMQ_URL
    broker = Broker("amqp", RABBITMQ_URL, settings)
    yield broker
    broker.remove_queues()


@pytest.fixture(params=["redis", "rabbitmq"])
def any_broker(request):
    return request.getfixturevalue("redis_broker" if request.param == "redis" else "rabbitmq")


def metrics(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }


# --- Redis ------------------------------------------------------------------------------------


def test_the_transport_keeps_a_list_per_queue_and_priority_step(redis_broker):
    queue = redis_broker.queue()
    for priority in (None, 0, 4, 5, 9):
        redis_broker.publish(queue, priority)
    client = redis.Redis.from_url(settings.REDIS_URL)
    lengths = {
        key.decode(): client.llen(key)
        for key in client.scan_iter(match=f"{queue}*")
        if client.type(key) == b"list"
    }
    client.close()
    assert set(lengths) <= set(system.queue_keys(queue))
    assert len(lengths) >= 3  # several priority steps, several lists
    assert sum(lengths.values()) == 5


def test_queue_depths_count_every_priority_step(redis_broker):
    queue = redis_broker.queue()
    empty = redis_broker.queue("-empty")
    for priority in (None, 1, 3, 6, 7, 9, 9):
        redis_broker.publish(queue, priority)

    depths = system.queue_depths([queue, empty])

    assert depths.error == ""
    assert depths.depths == {queue: 7, empty: 0}
    assert depths.unacked is not None


def test_on_redis_metrics_report_the_unacknowledged_count(redis_broker, staff_client):
    m = metrics(staff_client)
    assert m[("conveyor_broker_up", ())] == 1
    assert ("conveyor_queue_unacked", ()) in m


# --- RabbitMQ ---------------------------------------------------------------------------------


def test_on_rabbitmq_queue_depths_count_ready_messages_and_a_missing_queue_counts_0(rabbitmq):
    queue, missing, other = rabbitmq.queue(), rabbitmq.queue("-never-declared"), rabbitmq.queue()
    for _ in range(3):
        rabbitmq.publish(queue)
    rabbitmq.publish(other)

    depths = system.queue_depths([queue, missing, other])

    assert depths.error == ""
    assert depths.depths == {queue: 3, missing: 0, other: 1}
    assert depths.unacked is None  # RabbitMQ does not say: unknown, not 0


def test_on_rabbitmq_a_message_held_by_a_consumer_is_not_counted_as_waiting(rabbitmq):
    queue = rabbitmq.queue()
    rabbitmq.publish(queue)
    rabbitmq.publish(queue)
    with Connection(RABBITMQ_URL) as consumer:
        held = consumer.channel().basic_get(queue=queue, no_ack=False)  # one, not acknowledged
        assert held is not None
        assert system.queue_depths([queue]).depths == {queue: 1}
    # Its consumer gone without acknowledging it, the message waits in the queue again.
    assert system.queue_depths([queue]).depths == {queue: 2}


def test_on_rabbitmq_the_broker_answers_the_ping(rabbitmq):
    assert system.ping_broker() == "ok"


def test_on_rabbitmq_a_port_where_nothing_listens_is_reported_at_once(settings):
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"

    assert "refused" in system.ping_broker().lower()
    depths = system.queue_depths(["executions"])
    assert depths.depths == {} and depths.unacked is None
    assert "refused" in depths.error.lower()


def test_on_rabbitmq_a_server_that_never_answers_costs_about_one_probe_timeout(settings):
    # Accepts connections (the kernel does, from the backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{silent.getsockname()[1]}//"

        started = time.monotonic()
        answer = system.ping_broker()
        depths = system.queue_depths(["executions"])
        elapsed = time.monotonic() - started

    assert answer != "ok" and depths.error
    assert elapsed < 4 * system.PROBE_TIMEOUT


def test_on_rabbitmq_the_health_check_probes_rabbitmq(rabbitmq, client, settings):
    assert client.get("/healthz").json() == {"database": "ok", "broker": "ok"}

    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "unavailable"}


def test_on_rabbitmq_metrics_give_depths_and_leave_the_unacknowledged_count_out(
    rabbitmq, staff_client, make_agent
):
    queue = rabbitmq.queue()
    make_agent(queue=queue)
    rabbitmq.publish(queue)
    rabbitmq.publish(queue)

    m = metrics(staff_client)

    assert m[("conveyor_broker_up", ())] == 1
    assert m[("conveyor_queue_depth", (("queue", queue),))] == 2
    assert ("conveyor_queue_unacked", ()) not in m


def test_on_rabbitmq_the_dashboard_says_the_held_messages_are_not_counted(rabbitmq, staff_client):
    html = staff_client.get("/ops/").content.decode()
    assert "The broker did not answer" not in html
    assert "RabbitMQ does not tell" in html


# --- Either broker ----------------------------------------------------------------------------


def test_the_dashboard_shows_the_depth_of_an_agent_s_queue(any_broker, staff_client, make_agent):
    queue = any_broker.queue()
    make_agent(queue=queue)
    for priority in (0, 5, 9):
        any_broker.publish(queue, priority)

    response = staff_client.get("/ops/")

    queues = {q["name"]: q["depth"] for q in response.context["queues"]}
    assert queues[queue] == 3
    assert queues[settings.CONVEYOR_EXECUTIONS_QUEUE] >= 0
    assert settings.CONVEYOR_MAINTENANCE_QUEUE in queues
    assert f"agent__queue__exact={queue}" in response.content.decode()


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_the_dashboard_says_so_when_the_broker_does_not_answer(staff_client, settings, scheme):
    port = free_port()
    settings.CELERY_BROKER_URL = (
        f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"amqp://127.0.0.1:{port}//"
    )
    html = staff_client.get("/ops/").content.decode()
    assert "The broker did not answer" in html


def test_messages_set_aside_are_counted_per_queue_and_shown_to_operators(
    redis_broker, staff_client
):
    from config.broker import malformed_key

    queue = redis_broker.queue()
    clean = redis_broker.queue("-clean")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.lpush(malformed_key(queue), b"not json", b"{}")
    try:
        depths = system.queue_depths([queue, clean])
        assert depths.malformed == {queue: 2}

        m = metrics(staff_client)
        executions = settings.CONVEYOR_EXECUTIONS_QUEUE
        assert m[("conveyor_queue_malformed", (("queue", executions),))] == 0
    finally:
        client.delete(malformed_key(queue))
        client.close()


def test_the_dashboard_says_when_messages_were_set_aside(redis_broker, staff_client, db):
    from django.urls import reverse

    from config.broker import malformed_key

    key = malformed_key(settings.CONVEYOR_EXECUTIONS_QUEUE)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(key)
    page = staff_client.get(reverse("ops:dashboard")).content.decode()
    assert "unreadable message" not in page
    client.lpush(key, b"not json")
    try:
        page = staff_client.get(reverse("ops:dashboard")).content.decode()
    finally:
        client.delete(key)
        client.close()
    assert "1 unreadable message on" in page
    assert f"set aside in <code>{key}</code>" in page
