"""The retry policy value object: Celery's exponential formula, bounds and words."""

import pytest
from django.test import override_settings

from executions.retry import RetryPolicy


def policy(**overrides):
    values = {
        "max_retries": 3,
        "backoff": 30,
        "backoff_max": 600,
        "jitter": False,
        "retry_on": frozenset({"network", "timeout"}),
    }
    return RetryPolicy(**{**values, **overrides})


def test_waits_double_from_the_initial_backoff_up_to_the_maximum():
    p = policy(backoff=30, backoff_max=100)
    assert [p.countdown(attempt=n) for n in (1, 2, 3, 4)] == [30, 60, 100, 100]


def test_jitter_picks_a_wait_between_half_the_ceiling_and_the_ceiling():
    p = policy(backoff=4, jitter=True)
    waits = {p.countdown(attempt=3) for _ in range(300)}
    assert p.ceiling(attempt=3) == 16 and waits <= set(range(8, 17))
    assert len(waits) > 4  # really random, not a constant


def test_with_jitter_even_a_one_second_wait_is_never_zero():
    p = policy(backoff=1, jitter=True)
    assert {p.countdown(attempt=1) for _ in range(100)} == {1}


def test_a_longer_retry_after_wins_but_stays_below_the_installation_maximum():
    p = policy(backoff=1)
    assert p.countdown(attempt=1, retry_after=7.2) == 8
    assert p.countdown(attempt=1, retry_after=0.5) == 1
    with override_settings(CONVEYOR_MAX_BACKOFF=60):
        assert p.countdown(attempt=1, retry_after=86_400) == 60


def test_only_temporary_errors_of_listed_categories_are_retried():
    p = policy(retry_on=frozenset({"network"}))
    assert p.retries(category="network", retryable=True)
    assert not p.retries(category="timeout", retryable=True)
    assert not p.retries(category="network", retryable=False)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({}, "up to 3 retries, 30 s then doubling, at most 10 min apart"),
        (
            {"jitter": True},
            "up to 3 retries, 30 s then doubling, at most 10 min apart "
            "(randomised: each wait between half and all of it)",
        ),
        ({"max_retries": 0}, "no retries"),
        ({"max_retries": 1, "backoff": 90}, "1 retry, 1 min 30 s apart"),
        ({"backoff": 0}, "up to 3 retries, at once"),
    ],
)
def test_it_describes_itself_in_words(overrides, words):
    assert policy(**overrides).describe() == words


def test_max_attempts_counts_the_first_attempt():
    assert policy(max_retries=3).max_attempts == 4


def test_a_flow_override_replaces_only_what_it_names():
    base = policy(max_retries=3, backoff=30, backoff_max=600, jitter=True)

    assert base.overridden({"max_retries": 0}) == policy(
        max_retries=0, backoff=30, backoff_max=600, jitter=True
    )
    assert base.overridden({"backoff": 2, "backoff_max": 4, "jitter": False}) == policy(
        max_retries=3, backoff=2, backoff_max=4, jitter=False
    )
    # "enabled": false turns retries off whatever else it says; the categories stay the agent's.
    off = base.overridden({"enabled": False, "max_retries": 5})
    assert off.max_retries == 0 and off.retry_on == base.retry_on
    assert base.overridden({"enabled": True}) == base
