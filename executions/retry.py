"""The retry policy of an agent, as a value object.

The waits come from Celery's own exponential backoff (``get_exponential_backoff_interval``,
the formula behind ``retry_backoff``/``retry_backoff_max``/``retry_jitter``), so an agent's
policy and Celery's defaults agree: the wait after attempt *n* is
``min(backoff_max, backoff * 2 ** (n - 1))`` seconds. With jitter it is a whole number of
seconds picked at random between half of that and all of it ("equal jitter"): retries of many
runs that failed together still spread out, but none comes back at once (Celery's own full
jitter picks anywhere from 0, so a planned "2 s" wait could be 1 ms).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

# Temporary problems; a policy may retry fewer or more of the categories in executions.errors.
DEFAULT_RETRY_ON = ("timeout", "network", "rate_limited", "upstream_error", "worker_lost")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff: int
    backoff_max: int
    jitter: bool
    retry_on: frozenset[str]

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def retries(self, *, category: str, retryable: bool) -> bool:
        """Whether an error of this kind is retried at all (attempts left aside)."""
        return retryable and category in self.retry_on

    def ceiling(self, *, attempt: int) -> int:
        """The longest wait after failed attempt ``attempt`` (1-based)."""
        return get_exponential_backoff_interval(self.backoff, attempt - 1, self.backoff_max)

    def countdown(self, *, attempt: int, retry_after: float | None = None) -> int:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

        A ``retry_after`` the other side asked for (HTTP Retry-After) is honoured when it is
        longer, up to ``CONVEYOR_MAX_BACKOFF`` so that the wait stays below the broker's
        visibility timeout.
        """
        delay = self.ceiling(attempt=attempt)
        if self.jitter:
            floor = math.ceil(delay / 2)
            delay = random.randint(floor, delay)
        if retry_after is not None and retry_after > delay:
            delay = math.ceil(retry_after)
        return min(delay, settings.CONVEYOR_MAX_BACKOFF)

    def overridden(self, override: dict) -> RetryPolicy:
        """This policy with a flow's retry override applied (``agents.kinds.flow`` checks its
        shape): ``enabled`` false means no retries; ``max_retries``, ``backoff``,
        ``backoff_max`` and ``jitter`` replace this policy's own when given."""
        if override.get("enabled") is False:
            return replace(self, max_retries=0)
        names = {"max_retries": "max_retries", "backoff": "backoff", "backoff_max": "backoff_max"}
        changes = {field: override[key] for key, field in names.items() if key in override}
        if "jitter" in override:
            changes["jitter"] = bool(override["jitter"])
        return replace(self, **changes)

    def describe(self) -> str:
        """The policy in words: "up to 3 retries, 30 s then doubling, at most 10 min apart"."""
        from .humanize import seconds_in_words

        if self.max_retries == 0:
            return "no retries"
        retries = "1 retry" if self.max_retries == 1 else f"up to {self.max_retries} retries"
        if self.backoff == 0:
            return f"{retries}, at once"
        first = seconds_in_words(self.backoff)
        if self.max_retries == 1 or self.backoff >= self.backoff_max:
            waits = f"{first} apart"
        else:
            waits = f"{first} then doubling, at most {seconds_in_words(self.backoff_max)} apart"
        jitter = " (randomised: each wait between half and all of it)" if self.jitter else ""
        return f"{retries}, {waits}{jitter}"
