"""The live system outside the database: the broker (Redis) and the Celery workers.

Every call here is bounded in time (``PROBE_TIMEOUT``) so that a page or a health check answers
even when Redis or every worker is gone; each returns a value that says what went wrong instead
of raising.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger("conveyor.ops")

# Seconds a probe of Redis or of the workers may take.
PROBE_TIMEOUT = 1.0
# Seconds the workers' answer is reused (inspect broadcasts to every worker).
WORKERS_CACHE_SECONDS = 5
WORKERS_CACHE_KEY = "ops:workers"

# The kombu Redis transport keeps one list per queue and priority step: the queue's own name
# for the highest priority step (0) and "<queue>\x06\x16<step>" for the others (checked
# against a real Redis in tests/ops/test_queue_depth.py).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
# Messages delivered to a worker and not yet acknowledged (with acks_late: running, or held
# for a countdown) sit in this hash until acknowledged.
UNACKED_KEY = "unacked"


def redis_client(url: str | None = None) -> redis.Redis:
    """A client for the broker's Redis (redis://, rediss:// or unix:// URLs) that gives up fast."""
    return redis.Redis.from_url(
        url or settings.REDIS_URL,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry_on_timeout=False,
    )


def queue_keys(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


@dataclass(frozen=True)
class QueueDepths:
    #: Messages waiting per queue, in the order asked; empty when Redis did not answer.
    depths: dict[str, int]
    #: Messages handed to workers and not acknowledged yet (all queues together).
    unacked: int | None
    error: str = ""

    @property
    def total(self) -> int:
        return sum(self.depths.values())


def queue_depths(queues: list[str]) -> QueueDepths:
    """LLEN of every queue's priority lists and the unacknowledged count, in one round trip."""
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for key in queue_keys(queue):
                pipe.llen(key)
        pipe.hlen(UNACKED_KEY)
        replies = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("broker unreachable", extra={"action": "ops_broker_unreachable"})
        return QueueDepths({}, None, error=_describe(exc))
    finally:
        client.close()
    steps = len(PRIORITY_STEPS) + 1
    depths = {q: sum(replies[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}
    return QueueDepths(depths, replies[-1])


def ping_broker() -> str:
    """ "ok", or why the broker did not answer a PING within PROBE_TIMEOUT."""
    client = redis_client()
    try:
        client.ping()
    except redis.RedisError as exc:
        return _describe(exc)
    finally:
        client.close()
    return "ok"


@dataclass
class Workers:
    #: Worker name -> its active tasks as Celery reports them (id, name, args, time_start ...).
    active: dict[str, list[dict]] = field(default_factory=dict)
    error: str = ""

    @property
    def online(self) -> int:
        return len(self.active)

    @property
    def busy(self) -> int:
        return sum(len(tasks) for tasks in self.active.values())


def workers(*, refresh: bool = False, app=None) -> Workers | None:
    """The workers that answered an ``inspect active`` and what they run, cached a few seconds.

    Without ``refresh`` only the cache is read (None when it is empty), so a page never waits
    for the broadcast; the dashboard's workers panel asks with ``refresh=True``. ``app`` is
    Conveyor's Celery app unless another is given.
    """
    cached = cache.get(WORKERS_CACHE_KEY)
    if cached is not None or not refresh:
        return cached
    if app is None:
        from config.celery import app

    # kombu and the transport raise many kinds of errors; the panel shows which one it was.
    try:
        active = app.control.inspect(timeout=PROBE_TIMEOUT).active() or {}
    except Exception as exc:
        logger.warning("inspect failed", extra={"action": "ops_inspect_failed"})
        result = Workers(error=_describe(exc))
    else:
        result = Workers(active=dict(sorted(active.items())))
    cache.set(WORKERS_CACHE_KEY, result, WORKERS_CACHE_SECONDS)
    return result


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
