"""What went wrong, in words a person can act on.

Every failed attempt is classified into a :class:`Category`. The category decides the title a
user sees, the sentence that says what happens next or what to do, and whether Conveyor retries
(subject to the agent's policy) and whether a manual retry makes sense. Errors are stored as
strings; the traceback is kept apart for staff.
"""

from __future__ import annotations

import socket
import traceback
from dataclasses import dataclass

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.db import models

from agents.kinds.base import AgentError


class Category(models.TextChoices):
    TIMEOUT = "timeout", "Timed out"
    NETWORK = "network", "Network problem"
    RATE_LIMITED = "rate_limited", "Rate limited"
    AUTH = "auth", "Not authorised"
    UPSTREAM_ERROR = "upstream_error", "Upstream error"
    INVALID_INPUT = "invalid_input", "Invalid input"
    CONFIGURATION = "configuration", "Configuration problem"
    INTERNAL = "internal", "Internal error"
    CANCELLED = "cancelled", "Cancelled"
    WORKER_LOST = "worker_lost", "Worker lost"


@dataclass(frozen=True)
class CategoryInfo:
    title: str
    #: What to do about it once no retry is left (shown on a final failure).
    what_to_do: str
    #: Whether the error is temporary by nature (the agent's policy still decides).
    retryable: bool
    #: Whether a person pressing Retry has a fair chance of a different outcome.
    manual_retry_useful: bool


CATEGORIES: dict[str, CategoryInfo] = {
    Category.TIMEOUT: CategoryInfo(
        "The agent took too long",
        "If the work is expected to take longer, raise the agent's timeout; otherwise check "
        "whether the service it calls is slow right now, then retry.",
        retryable=True,
        manual_retry_useful=True,
    ),
    Category.NETWORK: CategoryInfo(
        "Could not reach the service",
        "Check that the address in the agent's settings is right and that the service is up, "
        "then retry.",
        retryable=True,
        manual_retry_useful=True,
    ),
    Category.RATE_LIMITED: CategoryInfo(
        "The service asked us to slow down",
        "Wait a while before retrying, or lower how often this agent runs.",
        retryable=True,
        manual_retry_useful=True,
    ),
    Category.AUTH: CategoryInfo(
        "The service refused the credentials",
        "Check the agent's secrets (API keys, tokens) and their permissions, update them on "
        "the agent's settings, then retry.",
        retryable=False,
        manual_retry_useful=False,
    ),
    Category.UPSTREAM_ERROR: CategoryInfo(
        "The service had a problem",
        "The service the agent depends on reported an error. Retry later; if it keeps "
        "failing, contact whoever runs that service.",
        retryable=True,
        manual_retry_useful=True,
    ),
    Category.INVALID_INPUT: CategoryInfo(
        "The input was not accepted",
        "Correct the input and retry with the new input.",
        retryable=False,
        manual_retry_useful=False,
    ),
    Category.CONFIGURATION: CategoryInfo(
        "The agent's settings do not work",
        "Fix the agent's settings, then retry.",
        retryable=False,
        manual_retry_useful=False,
    ),
    Category.INTERNAL: CategoryInfo(
        "The agent hit an unexpected error",
        "This is likely a bug in the agent. Its owner or an operator can see the technical "
        "detail; retrying will probably fail the same way.",
        retryable=False,
        manual_retry_useful=False,
    ),
    Category.CANCELLED: CategoryInfo(
        "Cancelled",
        "Someone cancelled this run. Retry it to run it again.",
        retryable=False,
        manual_retry_useful=True,
    ),
    Category.WORKER_LOST: CategoryInfo(
        "The worker running it stopped",
        "The machine running this execution stopped or restarted mid-run. Retry it.",
        retryable=True,
        manual_retry_useful=True,
    ),
}


@dataclass(frozen=True)
class ClassifiedError:
    category: str
    retryable: bool
    #: The specific reason in one or two sentences, safe to show the owner.
    reason: str
    #: Technical detail (exception type and traceback) for staff only.
    detail: str
    retry_after: float | None = None

    @property
    def info(self) -> CategoryInfo:
        return CATEGORIES[self.category]

    @property
    def title(self) -> str:
        return self.info.title


def classify(exc: BaseException, *, timeout: float | None = None) -> ClassifiedError:
    """Turn an exception raised while running an agent into a ClassifiedError.

    ``timeout`` is the agent's time limit, used to word a soft time limit.
    """
    detail = "".join(traceback.format_exception(exc)).strip()
    if isinstance(exc, AgentError):
        category = exc.category if exc.category in CATEGORIES else Category.INTERNAL
        return ClassifiedError(category, exc.retryable, exc.message, detail, exc.retry_after)
    if isinstance(exc, SoftTimeLimitExceeded):
        limit = f" of {timeout:g} s" if timeout else ""
        reason = f"The attempt ran past the agent's time limit{limit} and was stopped."
        return ClassifiedError(Category.TIMEOUT, True, reason, detail)
    if isinstance(exc, httpx.TimeoutException | TimeoutError | socket.timeout):
        return ClassifiedError(
            Category.TIMEOUT, True, f"A call did not answer in time ({_describe(exc)}).", detail
        )
    if isinstance(exc, httpx.TransportError | ConnectionError | socket.gaierror):
        return ClassifiedError(
            Category.NETWORK, True, f"A connection failed ({_describe(exc)}).", detail
        )
    return ClassifiedError(Category.INTERNAL, False, _describe(exc), detail)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
