"""The dashboard's capacity panel: agents and queues with a concurrency limit and their use,
every open or half-open circuit breaker, and the staff's Close button (through
``executions.capacity.breaker_close``)."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from executions.models import Execution, Limiter

pytestmark = pytest.mark.django_db

DASHBOARD = "/ops/"
CLOSE = "/ops/breakers/close/"


def waits(execution: Execution, reason: str, on: str) -> Execution:
    """Record a wait on a limit as the worker's claim records it (executions.capacity)."""
    Execution.objects.filter(pk=execution.pk).update(wait_reason=reason, waits_on=on)
    execution.refresh_from_db()
    return execution


def limiter(key: str, **state) -> Limiter:
    return Limiter.objects.update_or_create(key=key, defaults=state)[0]


def panel(client) -> str:
    html = client.get(DASHBOARD).content.decode()
    card = re.search(r'<section class="card" id="capacity">.*?</section>', html, re.S)
    assert card, "no capacity panel on the dashboard"
    return card.group(0)


def words(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@pytest.fixture
def open_breaker(make_agent, make_execution):
    """An http agent's breaker open after 4 failures, with two runs waiting for it."""
    agent = make_agent(name="Billing export", breaker_threshold=4)
    key = f"agent:{agent.uuid}"
    breaker = limiter(
        key,
        state=Limiter.State.OPEN,
        failures=4,
        last_failure="The service answered 503 Service Unavailable.",
        opened_at=timezone.now() - timedelta(minutes=3),
        probe_at=timezone.now() + timedelta(minutes=1),
        cooldown=60,
    )
    runs = [waits(make_execution(agent, "queued"), "circuit", key) for _ in range(2)]
    return breaker, runs


def test_it_lists_agents_and_queues_with_a_concurrency_limit_and_their_use(
    staff_client, make_agent, make_execution, settings
):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Nightly reports", "concurrency": 3},
    }
    agent = make_agent(name="Invoice sync", max_concurrency=2, queue="reports")
    make_execution(agent, "running")
    for _ in range(3):
        waits(make_execution(agent, "queued"), "slot", f"agent:{agent.uuid}")
    make_agent(name="No limit")

    html = panel(staff_client)
    text = words(html)

    assert "Invoice sync alice 1 of 2 3" in text
    assert "Queue reports Nightly reports 1 of 3 0" in text
    assert "No limit" not in text
    # The waiting count opens the admin list of those runs.
    assert f"waits_on=agent%3A{agent.uuid}" in html


def test_it_lists_every_open_or_half_open_breaker(staff_client, open_breaker, make_agent):
    half = limiter(
        "host:api.example.com",
        state=Limiter.State.HALF_OPEN,
        failures=5,
        opened_at=timezone.now(),
        last_failure="Timed out after 30 s.",
    )
    limiter("host:closed.example.com", state=Limiter.State.CLOSED)

    text = words(panel(staff_client))

    assert "Open Billing export agent of alice" in text
    assert "4 failures in a row · opened 3 min ago · next probe in 1 min · 2 runs waiting" in text
    assert "Last failure: The service answered 503 Service Unavailable." in text
    assert f"Half-open {half.key.removeprefix('host:')} destination" in text
    assert "a probe run is under way" in text
    assert "closed.example.com" not in text


def test_nothing_to_show_is_said_plainly(staff_client):
    text = words(panel(staff_client))
    assert "None: every circuit breaker is closed." in text
    assert "No queue or agent has a concurrency limit." in text


def test_staff_close_a_breaker_and_its_runs_go(staff_client, open_breaker):
    breaker, runs = open_breaker
    assert f'<input type="hidden" name="key" value="{breaker.key}">' in panel(staff_client)

    response = staff_client.post(CLOSE, {"key": breaker.key}, follow=True)

    breaker.refresh_from_db()
    assert breaker.state == Limiter.State.CLOSED
    assert response.redirect_chain[-1][0] == f"{reverse('ops:dashboard')}#capacity"
    assert f"Circuit breaker {breaker.key} closed" in response.content.decode()
    for run in runs:
        run.refresh_from_db()
        assert run.wait_reason != "circuit", "a run still waits for the closed breaker"


def test_closing_a_breaker_that_is_not_open_says_so(staff_client, make_agent):
    response = staff_client.post(CLOSE, {"key": "host:never-opened.example.com"}, follow=True)
    assert "was not open: nothing to close" in response.content.decode()


def test_closing_without_saying_which_is_a_400(staff_client):
    assert staff_client.post(CLOSE, {}).status_code == 400


def test_only_staff_may_close_a_breaker(client, alice, open_breaker):
    breaker, _ = open_breaker

    anonymous = client.post(CLOSE, {"key": breaker.key})
    client.force_login(alice)
    not_staff = client.post(CLOSE, {"key": breaker.key})
    read = client.get(CLOSE)

    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert not_staff.status_code == 403 and read.status_code == 403
    breaker.refresh_from_db()
    assert breaker.state == Limiter.State.OPEN


def test_the_close_button_is_a_post_with_the_csrf_token(staff, open_breaker):
    breaker, _ = open_breaker
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff)

    assert strict.get(CLOSE).status_code == 405
    assert strict.post(CLOSE, {"key": breaker.key}).status_code == 403  # no token
    html = strict.get(DASHBOARD).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert strict.post(CLOSE, {"key": breaker.key, "csrfmiddlewaretoken": token}).status_code == 302


def test_the_panel_costs_the_same_queries_however_many_limits_and_breakers(
    staff_client, make_agent, make_execution
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def add(n):
        for i in range(n):
            agent = make_agent(max_concurrency=2, breaker_threshold=3)
            make_execution(agent, "running")
            waits(make_execution(agent, "queued"), "slot", f"agent:{agent.uuid}")
            limiter(f"agent:{agent.uuid}", state=Limiter.State.OPEN, failures=3)
            limiter(f"host:h{i}-{agent.pk}.example.com", state=Limiter.State.HALF_OPEN)

    def queries():
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(DASHBOARD).status_code == 200
        return len(ctx.captured_queries)

    add(1)
    few = queries()
    add(6)
    assert queries() == few
