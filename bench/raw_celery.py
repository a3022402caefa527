"""The baseline: a plain Celery app with no database, on the same broker as Conveyor.

It has the settings Conveyor's worker runs with where they matter to speed and safety (JSON
only, acks late, reject on worker lost, prefetch multiplier 1, the same visibility timeout) and
Celery's defaults elsewhere (no task events, no result backend). The benchmarks start it as a
worker of its own::

    celery -A bench.raw_celery worker -P prefork -c 2 -Q <queue>

Its tasks report to Redis, which is how the benchmark process learns that they ran.
"""

from __future__ import annotations

import json
import os
import time

import redis
from celery import Celery

from bench.common import DEFAULT_REDIS_URL

REDIS_URL = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _broker_url(redis_url: str) -> str:
    # kombu spells a unix socket redis+socket://; redis-py spells it unix://.
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url.removeprefix("unix://")
    return redis_url


app = Celery("raw")
app.conf.update(
    broker_url=_broker_url(REDIS_URL),
    # Conveyor's default (CONVEYOR_MAX_BACKOFF + CONVEYOR_MAX_TIMEOUT + grace + 600).
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("CONVEYOR_VISIBILITY_TIMEOUT") or 7810)
    },
    broker_connection_retry_on_startup=True,
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    enable_utc=True,
)

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """One Redis connection per process, opened after the fork."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


@app.task(name="raw.noop")
def noop(counter: str) -> None:
    """Does nothing but say it ran: counts itself and stamps the time it finished."""
    pipe = client().pipeline(transaction=False)
    pipe.incr(counter)
    pipe.set(f"{counter}:last", repr(time.time()))
    pipe.execute()


@app.task(name="raw.stamp")
def stamp(key: str) -> None:
    """Records the time it started running (publish-to-start latency)."""
    client().rpush(key, repr(time.time()))


@app.task(name="raw.flaky", bind=True)
def flaky(self, key: str, index: int, fail_times: int, backoff: int, backoff_max: int) -> None:
    """Fails ``fail_times`` times, retrying with Celery's countdown, and records each attempt.

    The waits follow Conveyor's policy without jitter: ``min(backoff_max, backoff * 2**(n-1))``
    after attempt ``n``.
    """
    started = time.time()
    attempt = self.request.retries + 1
    delay = None
    if attempt <= fail_times:
        delay = min(backoff_max, backoff * 2 ** (attempt - 1))
    record = {"index": index, "attempt": attempt, "started": started, "delay": delay}
    record["finished"] = time.time()
    client().rpush(key, json.dumps(record))
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=fail_times)
