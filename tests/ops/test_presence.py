"""Workers say which queues they read (``ops.presence``), so that a waiting run's page can tell
"waiting for a worker" from "no worker online for its queue" without asking the workers.

Against the suite's real Redis; the last test reads what the suite's real worker announced."""

from __future__ import annotations

import time
import uuid

import pytest

from ops import presence


@pytest.fixture
def queue(settings):
    name = f"presence-{uuid.uuid4().hex[:8]}"
    client = presence._reader(settings.REDIS_URL)
    yield name
    client.delete(presence.presence_key(name))


def test_a_worker_announced_lately_is_online_on_its_queues_only(queue):
    presence.announce(worker="w1@host", queues=[queue])

    online = presence.queues_online([queue, f"{queue}-other"])

    assert online == {queue: ["w1@host"], f"{queue}-other": []}


def test_a_worker_not_heard_from_for_the_ttl_is_gone(queue):
    now = time.time()
    presence.announce(worker="old@host", queues=[queue], now=now - presence.TTL - 1)
    presence.announce(worker="new@host", queues=[queue], now=now)

    assert presence.queues_online([queue], now=now) == {queue: ["new@host"]}


def test_a_worker_that_stops_withdraws_at_once(queue):
    presence.announce(worker="w1@host", queues=[queue])
    presence.withdraw(worker="w1@host", queues=[queue])

    assert presence.queues_online([queue]) == {queue: []}


def test_without_redis_nothing_is_claimed_either_way(settings, queue):
    settings.REDIS_URL = "unix:///nonexistent/conveyor-redis.sock"

    assert presence.queues_online([queue]) is None


def test_the_suites_worker_announces_every_queue_it_reads(worker, settings):
    queues = [
        settings.CONVEYOR_EXECUTIONS_QUEUE,
        settings.CONVEYOR_MAINTENANCE_QUEUE,
        settings.CONVEYOR_NOTIFICATIONS_QUEUE,
    ]
    deadline = time.monotonic() + 10  # it announces as soon as it is ready: normally at once
    while not all(worker.nodename in names for names in presence.queues_online(queues).values()):
        assert time.monotonic() < deadline, presence.queues_online(queues)
        time.sleep(0.1)
