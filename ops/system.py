"""The live system outside the database: the broker (Redis or RabbitMQ) and the Celery workers.

The broker is the one Celery uses, ``settings.CELERY_BROKER_URL`` (``BROKER_URL``, or
``REDIS_URL``'s Redis). Every call here is bounded in time (``PROBE_TIMEOUT``) so that a page or
a health check answers even when the broker or every worker is gone; each returns a value that
says what went wrong instead of raising.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import redis
from amqp.exceptions import NotFound
from django.conf import settings
from django.core.cache import cache
from kombu import Connection

from config.broker import malformed_key

logger = logging.getLogger("conveyor.ops")

# Seconds a probe of the broker or of the workers may take (per connection attempt and per
# reply on AMQP).
PROBE_TIMEOUT = 1.0
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
# Seconds the workers' answer is reused (inspect broadcasts to every worker).
WORKERS_CACHE_SECONDS = 5
WORKERS_CACHE_KEY = "ops:workers"

# The kombu Redis transport keeps one list per queue and priority step: the queue's own name
# for the highest priority step (0) and "<queue>\x06\x16<step>" for the others (checked
# against a real Redis in tests/ops/test_system_queue_depth.py).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
# Messages delivered to a worker and not yet acknowledged (with acks_late: running, or held
# for a countdown) sit in this hash until acknowledged.
UNACKED_KEY = "unacked"


def broker_url() -> str:
    return settings.CELERY_BROKER_URL


def is_amqp(url: str) -> bool:
    """Whether ``url`` is a RabbitMQ (AMQP) broker's; otherwise it is a Redis."""
    return url.startswith(AMQP_SCHEMES)


def redis_client(url: str | None = None) -> redis.Redis:
    """A client that gives up fast for a Redis (redis://, rediss://, unix:// or kombu's
    redis+socket:// URL), the broker's unless ``url`` says otherwise."""
    url = url or broker_url()
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(
        url,
        socket_timeout=PROBE_TIMEOUT,
        socket_connect_timeout=PROBE_TIMEOUT,
        retry_on_timeout=False,
    )


@contextlib.contextmanager
def amqp_connection(url: str | None = None):
    """A connected kombu connection to a RabbitMQ (the broker's unless ``url`` says otherwise)
    that gives up fast: one attempt, ``PROBE_TIMEOUT`` to connect and for each reply."""
    connection = Connection(
        url or broker_url(),
        connect_timeout=PROBE_TIMEOUT,
        heartbeat=0,
        transport_options={"read_timeout": PROBE_TIMEOUT, "write_timeout": PROBE_TIMEOUT},
    )
    try:
        connection.ensure_connection(max_retries=0)  # kombu would otherwise wait and try again
        yield connection
    finally:
        with contextlib.suppress(Exception):  # a broker gone by now has nothing to close
            connection.release()


def queue_keys(queue: str) -> list[str]:
    return [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


@dataclass(frozen=True)
class QueueDepths:
    #: Messages waiting per queue, in the order asked; empty when the broker did not answer.
    depths: dict[str, int]
    #: Messages handed to workers and not acknowledged yet (all queues together); None when
    #: unknown: the broker did not answer, or it is RabbitMQ, which does not tell a client.
    unacked: int | None
    error: str = ""
    #: Unreadable messages set aside per queue (config/broker.py: "<queue>.malformed"), only the
    #: queues that have any; always empty on RabbitMQ, where Conveyor sets nothing aside.
    malformed: dict[str, int] = field(default_factory=dict)
    #: Queues whose name is a Redis key of another type (a hash, a string, a set ...), with
    #: that type: not a queue at all (counted 0). Something else uses the broker's database.
    not_queues: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.depths.values())


def queue_depths(queues: list[str]) -> QueueDepths:
    """Messages waiting in each queue (a queue the broker does not have counts 0), and on Redis
    the unacknowledged count."""
    url = broker_url()
    if is_amqp(url):
        return _amqp_queue_depths(url, queues)
    return _redis_queue_depths(url, queues)


def _redis_queue_depths(url: str, queues: list[str]) -> QueueDepths:
    """LLEN of every queue's priority lists and the unacknowledged count, in one round trip.

    Any name may be a Redis key of another type (an agent's queue named after a key that
    something else keeps in the broker's database): its LLEN fails with WRONGTYPE, which is
    taken as "not a queue" (a second round trip asks the keys' types, for the panel) rather
    than raised, so that the dashboard and /metrics answer whatever keys they find."""
    client = redis_client(url)
    try:
        pipe = client.pipeline(transaction=False)
        keys = [key for queue in queues for key in queue_keys(queue)]
        for key in keys:
            pipe.llen(key)
        for queue in queues:
            pipe.llen(malformed_key(queue))
        pipe.hlen(UNACKED_KEY)
        replies = pipe.execute(raise_on_error=False)
        wrong = [key for key, reply in zip(keys, replies, strict=False) if _failed(reply)]
        # "none": gone since (deleted or expired in between); it counted 0 all the same.
        types = {k: t for k, t in zip(wrong, _types(client, wrong), strict=True) if t != "none"}
    except redis.RedisError as exc:
        logger.warning("broker unreachable", extra={"action": "ops_broker_unreachable"})
        return QueueDepths({}, None, error=_describe(exc))
    finally:
        client.close()
    counts = [0 if _failed(reply) else reply for reply in replies]
    steps = len(PRIORITY_STEPS) + 1
    depths = {q: sum(counts[i * steps : (i + 1) * steps]) for i, q in enumerate(queues)}
    set_aside = counts[len(keys) : -1]
    malformed = {q: n for q, n in zip(queues, set_aside, strict=True) if n}
    not_queues = {}
    for queue in queues:
        found = [types[key] for key in queue_keys(queue) if key in types]
        if found:
            not_queues[queue] = found[0]
    if not_queues:
        logger.warning(
            "queue names that are not lists",
            extra={"action": "ops_queue_not_a_list", "queues": sorted(not_queues)},
        )
    unacked = None if _failed(replies[-1]) else replies[-1]
    return QueueDepths(depths, unacked, malformed=malformed, not_queues=not_queues)


def _failed(reply) -> bool:
    """A pipeline reply that is an error (WRONGTYPE: the key is not of the command's type)."""
    return isinstance(reply, Exception)


def _types(client: redis.Redis, keys: list[str]) -> list[str]:
    """The Redis types of ``keys`` ("hash", "string", "set", "zset", "stream" ...)."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    return [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]


def _amqp_queue_depths(url: str, queues: list[str]) -> QueueDepths:
    """A passive declare of every queue: RabbitMQ answers with its message count (ready
    messages only: those delivered to a worker and not acknowledged yet are not counted)."""
    depths = {}
    # kombu, py-amqp and the socket raise many kinds of errors; the panel shows which one.
    try:
        with amqp_connection(url) as connection:
            channel = connection.channel()
            for queue in queues:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except NotFound:
                    # The queue was never declared (no message sent, no worker consuming it yet).
                    # RabbitMQ closes the channel after refusing a passive declare.
                    depths[queue] = 0
                    channel = connection.channel()
    except Exception as exc:
        logger.warning("broker unreachable", extra={"action": "ops_broker_unreachable"})
        return QueueDepths({}, None, error=_describe(exc))
    return QueueDepths(depths, None)


def ping_broker() -> str:
    """ "ok", or why the broker did not answer (a Redis PING, an AMQP connection handshake)
    within PROBE_TIMEOUT."""
    url = broker_url()
    if is_amqp(url):
        try:
            with amqp_connection(url):
                pass
        except Exception as exc:  # see _amqp_queue_depths
            return _describe(exc)
        return "ok"
    client = redis_client(url)
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
