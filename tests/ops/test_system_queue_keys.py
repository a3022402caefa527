"""The queue panel and /metrics survive any Redis key they find: a queue name that the broker's
Redis holds as a hash, a string, a set or a sorted set is "not a queue" (counted 0), never a
WRONGTYPE error. Against the suite's real Redis; the keys are removed afterwards."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings as django_settings
from prometheus_client.parser import text_string_to_metric_families

from ops import selectors, system

pytestmark = pytest.mark.django_db

TYPES = ("hash", "string", "set", "zset")


@pytest.fixture
def client_of_the_broker(settings):
    """The suite's Redis as the broker, and a client of it."""
    settings.CELERY_BROKER_URL = django_settings.REDIS_URL.replace("unix://", "redis+socket://")
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def foreign_keys(client_of_the_broker, settings):
    """Declared queue names, each a Redis key of another type, by type; and "list", a real
    queue with two messages. Removed at the end."""
    run = uuid.uuid4().hex[:8]
    names = {kind: f"ops-keys-{run}-{kind}" for kind in (*TYPES, "list")}
    c = client_of_the_broker
    c.hset(names["hash"], "field", "value")
    c.set(names["string"], "value")
    c.sadd(names["set"], "member")
    c.zadd(names["zset"], {"member": 1})
    c.lpush(names["list"], b"{}", b"{}")
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        **{name: {"description": "", "concurrency": None} for name in names.values()},
    }
    yield names
    c.delete(*[key for name in names.values() for key in system.queue_keys(name)])


def test_a_queue_name_held_by_another_type_of_key_counts_zero_and_says_which(foreign_keys):
    names = list(foreign_keys.values())

    depths = system.queue_depths(names)

    assert depths.error == ""
    assert depths.depths == {**dict.fromkeys(names, 0), foreign_keys["list"]: 2}
    assert depths.not_queues == {foreign_keys[kind]: kind for kind in TYPES}
    assert depths.unacked is not None


def test_a_priority_step_of_another_type_makes_the_queue_not_a_queue(
    client_of_the_broker, foreign_keys
):
    queue = foreign_keys["list"]
    client_of_the_broker.hset(system.queue_keys(queue)[2], "field", "value")

    depths = system.queue_depths([queue])

    assert depths.depths == {queue: 2}
    assert depths.not_queues == {queue: "hash"}


def test_the_dashboard_answers_and_says_the_key_is_not_a_queue(
    staff_client, make_agent, foreign_keys
):
    make_agent(queue=foreign_keys["hash"])

    response = staff_client.get("/ops/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "The broker did not answer" not in html
    for kind in TYPES:
        name = foreign_keys[kind]
        assert (
            f"<code>{name}</code> is not a queue: the broker's Redis holds a {kind} under that "
            "name" in html
        )
    queues = {q["name"]: q["depth"] for q in response.context["queues"]}
    assert queues[foreign_keys["hash"]] == 0 and queues[foreign_keys["list"]] == 2


def test_metrics_answer_and_count_such_a_queue_zero(staff_client, foreign_keys):
    response = staff_client.get("/metrics")

    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    assert samples[("conveyor_broker_up", ())] == 1
    for kind in TYPES:
        assert samples[("conveyor_queue_depth", (("queue", foreign_keys[kind]),))] == 0
    assert samples[("conveyor_queue_depth", (("queue", foreign_keys["list"]),))] == 2


def test_the_queues_listed_are_the_declared_ones_conveyor_s_own_and_agents_older_ones(
    settings, make_agent
):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "retired": {"description": "", "concurrency": None},
    }
    make_agent(queue="retired")
    settings.CONVEYOR_QUEUES = {k: v for k, v in settings.CONVEYOR_QUEUES.items() if k != "retired"}

    names = selectors.queue_names()

    assert names[: len(settings.CONVEYOR_QUEUES)] == list(settings.CONVEYOR_QUEUES)
    assert names[0] == settings.CONVEYOR_EXECUTIONS_QUEUE
    assert settings.CONVEYOR_MAINTENANCE_QUEUE in names
    assert settings.CONVEYOR_NOTIFICATIONS_QUEUE in names
    assert names[-1] == "retired"
    assert len(names) == len(set(names))
