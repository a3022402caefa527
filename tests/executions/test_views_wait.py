"""Why a run waits on its page (the live part, refreshed by polling) and the executions list's
filter by wait reason, through Django's test client. The explanation itself is tested in
test_selectors_wait.py; here, that the page shows it and nothing else re-derives it."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.urls import reverse

from executions.models import Execution, ExecutionLog
from executions.selectors import WAIT_REASONS
from ops import presence

pytestmark = pytest.mark.django_db

WaitReason = Execution.WaitReason


def waits(execution: Execution, reason: str, *, on: str = "") -> Execution:
    """Record a wait on a limit as the worker's claim records it (executions.capacity)."""
    Execution.objects.filter(pk=execution.pk).update(wait_reason=reason, waits_on=on)
    execution.refresh_from_db()
    return execution


@pytest.fixture
def full_agent(make_agent, make_execution):
    """An agent limited to 2 runs at once, both busy, and a third run waiting for a slot."""
    agent = make_agent(name="Invoice sync", max_concurrency=2)
    holding = [make_execution(agent, "running") for _ in range(2)]
    waiting = waits(make_execution(agent, "queued"), WaitReason.SLOT, on=f"agent:{agent.uuid}")
    return agent, holding, waiting


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_a_run_waiting_for_a_slot_says_so_and_links_the_runs_holding_them(alice_client, full_agent):
    _, holding, waiting = full_agent

    html = alice_client.get(reverse("executions:detail", args=[waiting.uuid])).content.decode()
    live = alice_client.get(reverse("executions:live", args=[waiting.uuid])).content.decode()

    for page in (html, live):
        assert 'id="wait"' in page and 'data-wait-reason="slot"' in page
        assert "Waiting for a slot: 2 of 2 busy." in text_of(page)
        assert "Holding the slots" in page
        for run in holding:
            assert reverse("executions:detail", args=[run.uuid]) in page
    assert 'hx-trigger="every 1s' in live  # it keeps refreshing while it waits


def test_the_wait_s_log_line_has_no_attempt_number_before_any_attempt(alice_client, full_agent):
    _, _, waiting = full_agent
    ExecutionLog.objects.create(
        execution=waiting,
        attempt=0,
        at=waiting.created_at,
        message="Waiting for a slot: 2 of 2 busy.",
    )
    html = alice_client.get(reverse("executions:detail", args=[waiting.uuid])).content.decode()
    line = re.search(r'<div class="line info">.*?</div>', html).group(0)
    assert "Waiting for a slot" in line and "#0" not in line


def test_a_run_no_worker_reads_the_queue_of_says_so(
    alice_client, make_agent, make_execution, settings
):
    queue = "nobody-reads-this"
    settings.CONVEYOR_QUEUES = {**settings.CONVEYOR_QUEUES, queue: {"concurrency": None}}
    presence._reader(settings.REDIS_URL).delete(presence.presence_key(queue))
    run = make_execution(make_agent(queue=queue), "queued")

    html = alice_client.get(reverse("executions:live", args=[run.uuid])).content.decode()

    assert 'data-no-worker="true"' in html
    assert f"No worker online for its queue “{queue}”" in unescape(html)


def test_a_run_that_does_not_wait_shows_no_explanation(alice_client, full_agent):
    _, holding, _ = full_agent
    html = alice_client.get(reverse("executions:live", args=[holding[0].uuid])).content.decode()
    assert 'id="wait"' not in html


# --- The list's filter ------------------------------------------------------------------------


def test_every_wait_reason_is_offered_in_the_lists_filter(alice_client):
    html = alice_client.get(reverse("executions:list")).content.decode()
    select = re.search(r'<select name="wait_reason".*?</select>', html, re.S)
    assert select, "no wait reason filter on the list"
    offered = re.findall(r'<option value="([^"]*)"', select.group(0))
    assert offered == ["", *(value for value, _ in WAIT_REASONS)]
    assert {value for value, _ in WAIT_REASONS} == {r for r in WaitReason.values if r}


def test_the_list_filters_by_wait_reason(alice_client, full_agent, make_agent, make_execution):
    *_, waiting = full_agent
    make_execution(make_agent(), "queued")  # waits for a worker

    rows = alice_client.get(reverse("executions:list"), {"wait_reason": "slot"}).context["rows"]
    assert [e.pk for e in rows] == [waiting.pk]
    running = alice_client.get(reverse("executions:list"), {"wait_reason": "rate"})
    assert list(running.context["rows"]) == []


def test_an_unknown_wait_reason_is_an_error_on_the_form_not_a_crash(alice_client):
    response = alice_client.get(reverse("executions:list"), {"wait_reason": "nap"})
    assert response.status_code == 200
    assert response.context["form"].errors["wait_reason"]
