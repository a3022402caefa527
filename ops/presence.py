"""Which queues have a worker reading them right now, as the workers say themselves.

A waiting run's page says "no worker online for its queue" when no worker reads that queue, and
must know it without slowing a page that refreshes every second. Asking the workers
(``ops.system.workers``, an ``inspect`` broadcast) waits out its whole timeout for the replies
(a second, on every cache miss) and its answer lives in one process's memory. So the workers
tell instead:

* **Worker side.** When a worker is ready (Celery's ``worker_ready`` signal) its main process
  starts a thread that, every ``INTERVAL`` seconds, writes for each queue it consumes its name
  and the time into a sorted set ``conveyor:presence:<queue>`` (name -> epoch seconds) in
  REDIS_URL's Redis (the one every web process and machine shares, whatever the broker), and
  drops entries older than ``TTL`` seconds. On a clean stop (``worker_shutdown``) it removes its
  entries; a worker that died drops out after ``TTL`` seconds. A thread, not the worker's own
  heartbeat timer: a slow Redis then never holds up the worker's event loop.
* **Page side.** :func:`queues_online` reads the workers seen in the last ``TTL`` seconds, one
  ``ZRANGEBYSCORE`` per queue in one round trip (well under a millisecond), and answers None
  when Redis does not answer: then nothing is claimed either way.

Cost: per worker, one small pipeline every ``INTERVAL`` seconds; per page view, one round trip.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from functools import cache

import redis
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings

logger = logging.getLogger("conveyor.ops")

#: Seconds between two announcements of a worker.
INTERVAL = 5.0
#: A worker not heard from for this long counts as gone (three announcements missed).
TTL = 20.0
#: Seconds a page waits for Redis before it says nothing about workers.
READ_TIMEOUT = 0.5
KEY = "conveyor:presence:{queue}"


def presence_key(queue: str) -> str:
    return KEY.format(queue=queue)


def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
    )


@cache
def _reader(url: str) -> redis.Redis:
    return _client(url, READ_TIMEOUT)


def announce(*, worker: str, queues: list[str], now: float | None = None, client=None) -> None:
    """Say that ``worker`` reads ``queues`` now (and forget workers gone for ``TTL``)."""
    now = time.time() if now is None else now
    client = client or _reader(settings.REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        key = presence_key(queue)
        pipe.zadd(key, {worker: now})
        pipe.zremrangebyscore(key, "-inf", now - TTL)
        pipe.expire(key, int(TTL) + 1)
    pipe.execute()


def withdraw(*, worker: str, queues: list[str], client=None) -> None:
    """``worker`` stops: it reads none of ``queues`` any more."""
    client = client or _reader(settings.REDIS_URL)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrem(presence_key(queue), worker)
    pipe.execute()


def queues_online(queues: list[str], *, now: float | None = None) -> dict[str, list[str]] | None:
    """The workers seen reading each of ``queues`` in the last ``TTL`` seconds (sorted names; an
    empty list: none), or None when Redis did not answer."""
    now = time.time() if now is None else now
    try:
        pipe = _reader(settings.REDIS_URL).pipeline(transaction=False)
        for queue in queues:
            pipe.zrangebyscore(presence_key(queue), now - TTL, "+inf")
        replies = pipe.execute()
    except redis.RedisError:
        logger.warning("worker presence unknown", extra={"action": "ops_presence_unavailable"})
        return None
    return {
        queue: sorted(name.decode() if isinstance(name, bytes) else name for name in names)
        for queue, names in zip(queues, replies, strict=True)
    }


# --- Worker side -------------------------------------------------------------------------------


class Announcer(threading.Thread):
    """The worker main process's thread that announces the queues its consumer reads."""

    def __init__(self, consumer):
        super().__init__(name="conveyor-presence", daemon=True)
        self.consumer = consumer
        self.worker = consumer.hostname
        self.stopping = threading.Event()
        self.announced: list[str] = []
        # A client of the thread's own: pool children forked later never touch it.
        self.client = _client(settings.REDIS_URL, READ_TIMEOUT * 2)

    def queues(self) -> list[str]:
        """The queues the consumer reads now (none while it reconnects to the broker)."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is None:
            return []
        return sorted({queue.name for queue in task_consumer.queues})

    def run(self) -> None:
        while not self.stopping.is_set():
            queues = self.queues()
            try:
                announce(worker=self.worker, queues=queues, client=self.client)
                gone = sorted(set(self.announced) - set(queues))
                if gone:  # a queue cancelled at run time (celery control cancel_consumer)
                    withdraw(worker=self.worker, queues=gone, client=self.client)
                self.announced = queues
            except redis.RedisError:
                logger.warning(
                    "worker presence not written", extra={"action": "ops_presence_failed"}
                )
            self.stopping.wait(INTERVAL)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2 * READ_TIMEOUT)  # no announcement after the withdrawal
        with contextlib.suppress(redis.RedisError):
            withdraw(worker=self.worker, queues=self.announced or self.queues(), client=self.client)


_announcer: Announcer | None = None


@worker_ready.connect(weak=False)
def start_announcing(sender=None, **kwargs) -> None:
    """A worker is ready (``sender``: its consumer): announce its queues from now on."""
    global _announcer
    if sender is None or _announcer is not None:
        return
    _announcer = Announcer(sender)
    _announcer.start()


@worker_shutdown.connect(weak=False)
def stop_announcing(sender=None, **kwargs) -> None:
    global _announcer
    if _announcer is not None:
        _announcer.stop()
        _announcer = None
