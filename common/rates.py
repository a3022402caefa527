"""Rate limits counted in Redis, so that they hold across every web process.

Rates are written as "N/period" ("60/min", "5/sec", "1000/hour", "10000/day").

A fixed window: the key ``conveyor:rate:<scope>:<who>:<window number>`` is INCRemented and
given an expiry in one round trip; the request is refused once the count passes the limit, with
the seconds left in the window as Retry-After. Keys name tokens and agents by their random
identifiers (never database ids), so two databases sharing one Redis do not share counts.
"""

from __future__ import annotations

import logging
import re
import time
from functools import cache
from typing import NamedTuple

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

logger = logging.getLogger("conveyor.rates")

PERIODS = {
    "s": 1, "sec": 1, "second": 1,
    "m": 60, "min": 60, "minute": 60,
    "h": 3600, "hour": 3600,
    "d": 86400, "day": 86400,
}  # fmt: skip
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


class Rate(NamedTuple):
    limit: int
    seconds: int


def parse_rate(text: str, *, setting: str = "rate") -> Rate:
    match = _RATE.match(str(text).lower())
    if not match or match.group(2) not in PERIODS or int(match.group(1)) < 1:
        raise ImproperlyConfigured(
            f"{setting} must look like 60/min (a number of requests per sec, min, hour or day), "
            f"not {text!r}."
        )
    return Rate(int(match.group(1)), PERIODS[match.group(2)])


#: How a rate is written back: the period's short name.
PERIOD_NAMES = {1: "sec", 60: "min", 3600: "hour", 86400: "day"}


def canonical_rate(text: str) -> str:
    """``text`` as Conveyor writes a rate ("5 / MINUTE" -> "5/min"); ImproperlyConfigured when
    it is not one."""
    rate = parse_rate(text)
    return f"{rate.limit}/{PERIOD_NAMES[rate.seconds]}"


def rate_validator(value: str) -> None:
    """A rate is "N/period": 5/min, 100/hour (the syntax of the site's API rates)."""
    if not value:
        return
    try:
        parse_rate(value)
    except ImproperlyConfigured:
        raise ValidationError(
            f"“{value}” is not a rate: write a number of starts per sec, min, hour or day, "
            "e.g. 5/min."
        ) from None


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def hit(scope: str, who: str, rate_text: str, *, setting: str, now: float | None = None):
    """Count one request; returns None if allowed, else the seconds to wait.

    If Redis cannot be reached the request is allowed (and logged): a limit must not take the
    API or the webhook endpoint down with it.
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
