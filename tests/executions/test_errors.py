"""Error classification: categories, wording and what is retried."""

import socket

import httpx
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from agents.kinds.base import (
    AuthError,
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from executions.errors import CATEGORIES, Category, classify
from executions.models import Execution


@pytest.mark.parametrize(
    ("exc", "category", "retryable"),
    [
        (RetryableError("busy"), "upstream_error", True),
        (RateLimitedError("slow down", retry_after=5), "rate_limited", True),
        (PermanentError("no"), "internal", False),
        (AuthError(), "auth", False),
        (ConfigurationError("bad url"), "configuration", False),
        (SoftTimeLimitExceeded(), "timeout", True),
        (httpx.ReadTimeout("read timed out"), "timeout", True),
        (TimeoutError(), "timeout", True),
        (httpx.ConnectError("refused"), "network", True),
        (ConnectionRefusedError(111, "Connection refused"), "network", True),
        (socket.gaierror(-2, "Name or service not known"), "network", True),
        (ValueError("bad value"), "internal", False),
        (KeyError("missing"), "internal", False),
    ],
)
def test_it_classifies_exceptions(exc, category, retryable):
    error = classify(exc)
    assert (error.category, error.retryable) == (category, retryable)
    assert error.reason and error.title == CATEGORIES[category].title


def test_the_retry_after_a_kind_asked_for_travels_with_the_error():
    assert classify(RateLimitedError(retry_after=12)).retry_after == 12


def test_a_soft_time_limit_names_the_agents_timeout():
    error = classify(SoftTimeLimitExceeded(), timeout=30)
    assert error.reason == "The attempt ran past the agent's time limit of 30 s and was stopped."


def test_the_detail_holds_the_traceback_and_the_reason_does_not():
    try:
        raise ValueError("boom")
    except ValueError as exc:
        error = classify(exc)
    assert error.reason == "ValueError: boom"
    assert "Traceback" in error.detail and "Traceback" not in error.reason


def test_an_error_without_a_message_uses_its_docstring():
    assert AuthError().message == "The service the agent calls refused its credentials."


def test_every_category_has_a_title_and_advice():
    assert set(CATEGORIES) == set(Category.values)
    for info in CATEGORIES.values():
        assert info.title and info.what_to_do.endswith(".")


def test_every_status_has_a_label_and_a_place_in_the_state_machine():
    assert set(Execution.ALLOWED_TRANSITIONS) == set(Execution.Status.values)
    for status in Execution.Status:
        assert status.label
    for terminal in Execution.TERMINAL_STATUSES:
        assert Execution.ALLOWED_TRANSITIONS[terminal] == set()
