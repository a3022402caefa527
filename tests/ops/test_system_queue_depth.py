"""Queue depth is read from the broker's own lists: one per queue and priority step.

These tests publish real messages through Celery to queues nobody consumes and check both the
key names the kombu Redis transport uses and the figures the dashboard shows.
"""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings

from config.celery import app
from ops import system

pytestmark = pytest.mark.django_db


@pytest.fixture
def unconsumed_queue():
    """A queue name of this test only; its lists are removed afterwards."""
    name = f"ops-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(*system.queue_keys(name))
    client.delete(f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")
    client.close()


def publish(queue: str, priority: int | None) -> None:
    options = {} if priority is None else {"priority": priority}
    # A task name no worker knows: the message only has to wait in the queue.
    app.send_task("ops.tests.never_run", queue=queue, **options)


def test_the_transport_keeps_a_list_per_queue_and_priority_step(unconsumed_queue):
    for priority in (None, 0, 4, 5, 9):
        publish(unconsumed_queue, priority)
    client = redis.Redis.from_url(settings.REDIS_URL)
    lengths = {
        key.decode(): client.llen(key)
        for key in client.scan_iter(match=f"{unconsumed_queue}*")
        if client.type(key) == b"list"
    }
    client.close()
    assert set(lengths) <= set(system.queue_keys(unconsumed_queue))
    assert len(lengths) >= 3  # several priority steps, several lists
    assert sum(lengths.values()) == 5


def test_queue_depths_count_every_priority_step(unconsumed_queue):
    empty = f"{unconsumed_queue}-empty"
    for priority in (None, 1, 3, 6, 7, 9, 9):
        publish(unconsumed_queue, priority)

    depths = system.queue_depths([unconsumed_queue, empty])

    assert depths.error == ""
    assert depths.depths == {unconsumed_queue: 7, empty: 0}
    assert depths.unacked is not None


def test_the_dashboard_shows_the_depth_of_an_agent_s_queue(
    staff_client, make_agent, unconsumed_queue
):
    make_agent(queue=unconsumed_queue)
    for priority in (0, 5, 9):
        publish(unconsumed_queue, priority)

    response = staff_client.get("/ops/")

    queues = {q["name"]: q["depth"] for q in response.context["queues"]}
    assert queues[unconsumed_queue] == 3
    assert queues[settings.CONVEYOR_EXECUTIONS_QUEUE] >= 0
    assert settings.CONVEYOR_MAINTENANCE_QUEUE in queues
    assert f"agent__queue__exact={unconsumed_queue}" in response.content.decode()


def test_the_dashboard_says_so_when_the_broker_does_not_answer(staff_client, settings):
    from tests.stack import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    html = staff_client.get("/ops/").content.decode()
    assert "The broker did not answer" in html
