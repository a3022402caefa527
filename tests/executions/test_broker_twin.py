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

from executions.broker import Message, publish_many
from executions.services import enqueue
from ops.system import queue_keys

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(settings.RABBITMQ, reason="the copies are pushed on Redis brokers only"),
]

QUEUE = "nobody-listens"


@pytest.fixture
def queue():
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


@pytest.mark.parametrize(("priority", "attempt"), [(0, 0), (5, 1), (9, 3)])
def test_a_copied_message_is_the_one_celery_publishes(queue, make_agent, priority, attempt):
    agent = make_agent(queue=QUEUE, priority=priority, timeout=42)
    enqueue(1001, agent, attempt=attempt, task_id="celery-1001")
    copies = publish_many(
        [
            Message(1000, agent, attempt, "batch-1000"),  # the first: through Celery
            Message(1001, agent, attempt, "batch-1001"),  # a copy of the first's message
            Message(1002, agent, attempt, "batch-1002"),
        ]
    )
    assert copies == 2
    found = entries(queue)
    assert sorted(found) == ["batch-1000", "batch-1001", "batch-1002", "celery-1001"]

    celery, copy = found["celery-1001"], found["batch-1001"]
    assert copy["properties"]["delivery_tag"] != celery["properties"]["delivery_tag"]
    # The same run through Celery and as a copy: only the task id may differ.
    for message in (celery, copy):
        message["headers"]["id"] = message["headers"]["root_id"] = "same"
        message["properties"]["correlation_id"] = "same"
        message["headers"].pop("origin")  # the process's name; the same process here anyway
    assert without_tag(copy) == without_tag(celery)
    assert copy["decoded"][0] == [1001]
    assert copy["decoded"][1] == {"agent": agent.pk}
    assert copy["headers"]["retries"] == attempt
    assert copy["headers"]["timelimit"] == [42 + settings.CONVEYOR_TIME_LIMIT_GRACE, 42]
    assert found["batch-1002"]["decoded"][0] == [1002]


def test_runs_of_several_agents_and_attempts_each_get_their_own_message(queue, make_agent):
    fast, slow = make_agent(queue=QUEUE, priority=2), make_agent(queue=QUEUE, timeout=7)
    messages = [
        Message(1, fast, 0, "a-1"),
        Message(2, slow, 0, "b-2"),
        Message(3, fast, 0, "a-3"),
        Message(4, fast, 2, "a-4"),
        Message(5, slow, 0, "b-5"),
        Message(6, fast, 2, "a-6"),
    ]
    # Three groups (fast at attempt 0 and at 2, slow at 0): the first of each through Celery.
    assert publish_many(messages) == 3
    found = entries(queue)
    assert sorted(found) == sorted(m.task_id for m in messages)
    for m in messages:
        message = found[m.task_id]
        assert message["decoded"][0] == [m.execution_id]
        assert message["decoded"][1] == {"agent": m.agent.pk}
        assert message["headers"]["retries"] == m.attempt
        assert message["headers"]["root_id"] == m.task_id
        assert message["headers"]["timelimit"][1] == m.agent.timeout
        assert message["properties"]["priority"] == 9 - m.agent.priority
