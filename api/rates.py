"""Rates written as "N/period" ("60/min", "5/sec", "1000/hour", "10000/day")."""

from __future__ import annotations

import re
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured

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
