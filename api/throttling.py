"""Rate limits counted in Redis, so that they hold across every web process.

A fixed window: the key ``conveyor:rate:<scope>:<who>:<window number>`` is INCRemented and
given an expiry in one round trip; the request is refused once the count passes the limit, with
the seconds left in the window as Retry-After. Keys name tokens and agents by their random
identifiers (never database ids), so two databases sharing one Redis do not share counts.
"""

from __future__ import annotations

import logging
import time
from functools import cache

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle

from .rates import parse_rate

logger = logging.getLogger("conveyor.api")


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def hit(scope: str, who: str, rate_text: str, *, setting: str, now: float | None = None):
    """Count one request; returns None if allowed, else the seconds to wait.

    If Redis cannot be reached the request is allowed (and logged): a limit must not take the
    API down with it.
    """
    rate = parse_rate(rate_text, setting=setting)
    now = time.time() if now is None else now
    window = int(now // rate.seconds)
    key = f"conveyor:rate:{scope}:{who}:{window}"
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, rate.seconds + 1)
        count, _ = pipe.execute()
    except redis.RedisError as exc:
        logger.warning(
            "rate limit not counted: %s",
            exc,
            extra={"action": "rate_limit_unavailable", "scope": scope},
        )
        return None
    if count <= rate.limit:
        return None
    return (window + 1) * rate.seconds - now


class RunRateThrottle(BaseThrottle):
    """CONVEYOR_API_RUN_RATE per token (per user for a browser session) on run requests."""

    scope = "run"

    def allow_request(self, request, view):
        token = request.auth
        who = f"token:{token.prefix}{token.uuid.hex}" if token is not None else None
        if who is None:
            user = request.user
            who = f"user:{user.pk}:{user.date_joined.timestamp():.6f}"
        self._wait = hit(
            self.scope, who, settings.CONVEYOR_API_RUN_RATE, setting="CONVEYOR_API_RUN_RATE"
        )
        return self._wait is None

    def wait(self):
        return self._wait
