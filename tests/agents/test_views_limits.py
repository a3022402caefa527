"""The agent page's Limits card: each limit on its runs (its own, its queue's, its destination's)
with its use now: runs at once, starts in the current period, the circuit breaker's state."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from executions.models import Execution, Limiter

pytestmark = pytest.mark.django_db


def limits_card(client, agent) -> str:
    html = client.get(reverse("agents:detail", args=[agent.uuid])).content.decode()
    card = re.search(r'<section class="card" id="limits">.*?</section>', html, re.S)
    assert card, "no Limits card on the agent page"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", card.group(0))).split())


def waits(execution: Execution, reason: str, on: str) -> None:
    """Record a wait on a limit as the worker's claim records it (executions.capacity)."""
    Execution.objects.filter(pk=execution.pk).update(wait_reason=reason, waits_on=on)


def limiter(key: str, **state) -> Limiter:
    return Limiter.objects.update_or_create(key=key, defaults=state)[0]


def test_an_agent_without_limits_says_so(alice_client, make_agent):
    assert "No limits: its runs start as soon as a worker is free" in limits_card(
        alice_client, make_agent()
    )


def test_it_shows_runs_at_once_and_those_waiting_for_a_slot(
    alice_client, make_agent, make_execution
):
    agent = make_agent(max_concurrency=2)
    make_execution(agent, "running")
    for _ in range(3):
        waits(make_execution(agent, "queued"), "slot", f"agent:{agent.uuid}")

    card = limits_card(alice_client, agent)

    assert "This agent" in card
    assert "At once 1 of 2 running, 3 waiting for a slot" in card


def test_it_shows_the_starts_used_in_the_current_period(alice_client, make_agent):
    agent = make_agent(rate_limit="5/min")
    now = time.time()
    limiter(f"agent:{agent.uuid}", starts=[now - 300, now - 20, now - 10])

    assert "Starts at most 5 starts a minute: 2 used in the last minute" in limits_card(
        alice_client, agent
    )


def test_a_rate_limit_used_up_says_when_the_next_start_is_allowed(alice_client, make_agent):
    agent = make_agent(rate_limit="2/hour")
    now = time.time()
    limiter(f"agent:{agent.uuid}", starts=[now - 1800, now - 60])

    card = limits_card(alice_client, agent)

    assert "2 used in the last hour; the next start is allowed in 30 min" in card


def test_an_open_breaker_says_since_when_after_how_many_failures_and_the_next_probe(
    alice_client, make_agent, make_execution
):
    agent = make_agent(breaker_threshold=3)
    limiter(
        f"agent:{agent.uuid}",
        state=Limiter.State.OPEN,
        failures=3,
        last_failure="The service answered 503 Service Unavailable.",
        opened_at=timezone.now() - timedelta(minutes=4),
        probe_at=timezone.now() + timedelta(minutes=2),
    )
    waits(make_execution(agent, "queued"), "circuit", f"agent:{agent.uuid}")

    card = limits_card(alice_client, agent)

    assert "Circuit breaker Open since 4 min ago after 3 failures in a row" in card
    assert "next probe in 2 min" in card
    assert "Last failure: The service answered 503 Service Unavailable." in card
    assert "1 run waiting for it to close" in card


def test_a_half_open_breaker_links_its_probe_run(alice_client, make_agent, make_execution):
    agent = make_agent(breaker_threshold=3)
    probe = make_execution(agent, "running")
    limiter(
        f"agent:{agent.uuid}",
        state=Limiter.State.HALF_OPEN,
        failures=3,
        opened_at=timezone.now(),
        probe_execution=probe.pk,
    )
    html = alice_client.get(reverse("agents:detail", args=[agent.uuid])).content.decode()

    assert "Half-open a probe run is under way" in limits_card(alice_client, agent)
    assert reverse("executions:detail", args=[probe.uuid]) in html


def test_a_closed_breaker_states_its_rule(alice_client, make_agent):
    agent = make_agent(breaker_threshold=5, breaker_window=300, breaker_cooldown=60)

    assert (
        "Circuit breaker Closed opens after 5 failures in a row within 5 min; first probe "
        "after 1 min" in limits_card(alice_client, agent)
    )


def test_it_shows_its_queues_limit(alice_client, make_agent, make_execution, settings, bob):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Nightly reports", "concurrency": 3},
    }
    agent = make_agent(queue="reports")
    make_execution(agent, "running")
    make_execution(make_agent(bob, queue="reports"), "running")  # the queue is shared

    card = limits_card(alice_client, agent)

    assert "Its queue “reports”, all agents on it At once 2 of 3 running" in card
