"""executions.broker.publish_many against Celery's own publication, on the suite's Redis.

A batch's runs after the first of their agent and attempt are pushed as copies of the message
Celery builds (executions/broker.py). Here the same run is published both ways, to a queue nobody
reads, and the two entries Redis holds are compared field by field: everything but the
transport's delivery tag (a fresh id per message) must be equal, the decoded body included.
"""

from __future__ import annotations

import base64
import json

import pytest
import redis
from django.conf import settings
from kombu.transport import redis as kombu_redis

from executions import broker
from executions.broker import Message, publish_many
from executions.services import enqueue, enqueue_through_celery
from ops.system import queue_keys
from tests.upstream import source_sha256

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(settings.RABBITMQ, reason="the copies are pushed on Redis brokers only"),
]

QUEUE = "nobody-listens"


@pytest.fixture
def queue():
    broker._declared.clear()  # this process has not published to the queue yet
    broker._kept.failed_at = None  # no pause left by another test
    client = redis.Redis.from_url(settings.REDIS_URL)  # the broker's, as in tests/config
    client.delete(*queue_keys(QUEUE))
    yield client
    client.delete(*queue_keys(QUEUE))
    client.close()


def entries(client) -> dict[str, dict]:
    """Every message on the queue (any priority), by task id, with its body decoded."""
    found = {}
    for key in queue_keys(QUEUE):
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            message["key"] = key
            message["decoded"] = json.loads(base64.b64decode(message["body"]))
            found[message["headers"]["id"]] = message
    return found


def without_tag(message: dict) -> dict:
    properties = {k: v for k, v in message["properties"].items() if k != "delivery_tag"}
    return {**message, "properties": properties}


def same_run(message: dict) -> dict:
    """The message without what names the publication rather than the run: the task id and the
    transport's delivery tag (and the sending process's name, the same here anyway)."""
    message = json.loads(json.dumps(message))
    message["headers"]["id"] = message["headers"]["root_id"] = "?"
    message["headers"].pop("origin")
    message["properties"]["correlation_id"] = "?"
    message["properties"].pop("delivery_tag")
    return message


def test_every_copied_message_is_the_one_celery_publishes(queue, make_agent):
    agents = [
        make_agent(queue=QUEUE, priority=0, timeout=42),
        make_agent(queue=QUEUE, priority=5, timeout=7),
        make_agent(queue=QUEUE, priority=9, timeout=3600),
    ]
    messages = [
        Message(1000 + i, agent, attempt, f"batch-{1000 + i}")
        for i, (agent, attempt) in enumerate(
            [(agents[0], 0), (agents[1], 0), (agents[0], 0), (agents[2], 3), (agents[1], 1)]
        )
    ]
    # The first (of the queue) through Celery, the others as copies of its message.
    assert publish_many(messages) == len(messages) - 1
    for m in messages:
        enqueue_through_celery(
            m.execution_id, m.agent, attempt=m.attempt, task_id=f"celery-{m.execution_id}"
        )
    found = entries(queue)
    assert len(found) == 2 * len(messages)

    for m in messages:
        copy, celery = found[f"batch-{m.execution_id}"], found[f"celery-{m.execution_id}"]
        assert same_run(copy) == same_run(celery)
        assert copy["headers"]["root_id"] == copy["properties"]["correlation_id"] == m.task_id
        assert copy["properties"]["delivery_tag"] != celery["properties"]["delivery_tag"]
        # What the comparison holds, named:
        assert copy["decoded"][:2] == [[m.execution_id], {"agent": m.agent.pk}]
        assert copy["headers"]["retries"] == m.attempt
        limit = m.agent.timeout
        assert copy["headers"]["timelimit"] == [limit + settings.CONVEYOR_TIME_LIMIT_GRACE, limit]
        assert copy["properties"]["priority"] == 9 - m.agent.priority
    # Priorities are lists of their own on Redis: each message is on its agent's.
    assert {found[f"batch-{m.execution_id}"]["key"] for m in messages} == {
        found[f"celery-{m.execution_id}"]["key"] for m in messages
    }
    assert len({found[f"batch-{m.execution_id}"]["key"] for m in messages}) == 3


def test_a_single_run_is_sent_as_a_copy_once_its_queue_was_declared(queue, make_agent):
    """enqueue (a run sent now): through Celery the first time this process uses the queue,
    then a copy of the message Celery built; a retry's delayed message always through Celery."""
    agent = make_agent(queue=QUEUE, priority=4)
    enqueue(1, agent, attempt=0, task_id="single-1")
    assert broker._declared == {QUEUE}
    enqueue(2, agent, attempt=1, task_id="single-2")
    enqueue_through_celery(2, agent, attempt=1, task_id="celery-2")
    enqueue(3, agent, attempt=2, task_id="single-3", countdown=30)
    found = entries(queue)
    assert sorted(found) == ["celery-2", "single-1", "single-2", "single-3"]
    assert same_run(found["single-2"]) == same_run(found["celery-2"])
    assert found["single-3"]["headers"]["eta"] is not None  # Celery's countdown


def test_a_queue_declared_with_an_expiry_goes_through_celery(queue, make_agent):
    """kombu sets a queue's expiry (``task_queues`` with ``expires``) on its lists at every
    publication; a copy would not, so every run of such a queue goes through Celery."""
    from kombu import Queue, pools

    from config.celery import app

    # Celery declares a queue once per connection, and its connections are shared by the whole
    # process (kombu's pools): new ones, as in a process started with the queue so declared.
    app.amqp.queues.add(Queue(QUEUE, expires=60))
    pools.reset()
    app.amqp._producer_pool = app._pool = None
    try:
        agent = make_agent(queue=QUEUE)
        assert publish_many([Message(1, agent, 0, "expiring-1")]) == 0
        assert publish_many([Message(i, agent, 0, f"expiring-{i}") for i in (2, 3)]) == 0
        held = [key for key in queue_keys(QUEUE) if queue.exists(key)]
        assert sorted(entries(queue)) == ["expiring-1", "expiring-2", "expiring-3"]
        # The expiry Celery's publication set on the lists holding them, 60 s in milliseconds.
        assert held and all(0 < queue.pttl(key) <= 60_000 for key in held)
    finally:
        app.amqp.queues.pop(QUEUE, None)
        pools.reset()
        app.amqp._producer_pool = app._pool = None


@pytest.mark.django_db(False)
def test_the_repeated_put_matches_the_installed_kombu():
    """The copies repeat the steps of kombu's Redis ``Channel._put``: a kombu that changed it
    needs executions/broker.py checked against it (then update KOMBU_PUT_SHA256)."""
    assert source_sha256(kombu_redis.Channel._put) == broker.KOMBU_PUT_SHA256


def test_a_thread_keeps_one_connection_for_copies_until_celery_makes_a_new_pool(queue, make_agent):
    """The copies go through a connection this thread keeps (not a producer taken from Celery's
    pool each time); when Celery makes a new pool (other broker settings, a forked process) the
    thread makes a new connection, to the broker now set. A broker it cannot reach gives none:
    every message then goes through Celery, which retries and says why it failed."""
    from config.celery import app

    agent = make_agent(queue=QUEUE)
    enqueue(1, agent, attempt=0, task_id="kept-1")  # through Celery: declares the queue
    enqueue(2, agent, attempt=0, task_id="kept-2")
    kept, pushing = broker._kept.channel, broker._kept.redis
    assert kept is not None and pushing is not None
    enqueue(3, agent, attempt=0, task_id="kept-3")
    assert broker._kept.channel is kept
    assert broker._kept.redis is pushing  # the copies' own connection to Redis, kept too

    def new_pool():
        app.amqp._producer_pool = None
        app._pool = None

    saved = app.conf.broker_write_url
    app.conf.broker_write_url = "redis://127.0.0.1:9/0"
    new_pool()
    try:
        assert broker._copy_channel(app) is None
        assert broker._kept.connection is None  # closed, tried again at the next publication
    finally:
        app.conf.broker_write_url = saved
        new_pool()
    enqueue(4, agent, attempt=0, task_id="kept-4")
    assert broker._kept.channel not in (None, kept)
    assert broker._kept.redis not in (None, pushing)
    assert broker._kept.channel.connection.client.port != 9  # the broker set again
    assert sorted(entries(queue)) == ["kept-1", "kept-2", "kept-3", "kept-4"]


def test_copies_the_broker_refuses_go_through_celery_and_a_new_connection_is_made(
    queue, make_agent, monkeypatch
):
    """Copies the broker refuses are handed to Celery, which publishes them, and the
    connection for copies is closed: publications go through Celery for COPY_PAUSE seconds
    (none pays a failed attempt first), then a new connection is made."""
    agent = make_agent(queue=QUEUE)
    enqueue(1, agent, attempt=0, task_id="refused-1")
    enqueue(2, agent, attempt=0, task_id="refused-2")
    kept = broker._kept.channel

    # The broker goes away for this connection only (TCP or a unix socket alike).
    def refused():
        raise redis.ConnectionError("the broker went away")

    broker._kept.redis.disconnect()
    monkeypatch.setattr(broker._kept.redis, "_connect", refused)
    enqueue(3, agent, attempt=0, task_id="refused-3")
    assert broker._kept.channel is None and broker._kept.redis is None
    enqueue(4, agent, attempt=0, task_id="refused-4")  # within the pause: through Celery
    assert broker._kept.connection is None
    monkeypatch.setattr(broker, "COPY_PAUSE", 0)  # the pause is over
    enqueue(5, agent, attempt=0, task_id="refused-5")
    assert broker._kept.channel not in (None, kept)
    assert sorted(entries(queue)) == [f"refused-{n}" for n in range(1, 6)]
