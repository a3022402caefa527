"""A flow's execution page shows its steps as a timeline; a step's page links back to its flow;
a running execution shows its last checkpoint. Through Django's test client, with flows run by
the real engine (``executions.flows``) and their steps finished through the services a worker
uses, without a worker (browser tests: test_views_flow_browser.py)."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions.flows import flow_advance, flow_start
from executions.models import Execution, FlowStep
from executions.runner import ExecutionContext
from executions.services import (
    attempt_fail,
    attempt_succeed,
    execution_cancel,
    execution_claim,
    execution_request,
    execution_retry,
)
from tests.conftest import failure, flow_started

pytestmark = pytest.mark.django_db


# --- Running flows without a worker ---------------------------------------------------------


@pytest.fixture
def echo(make_agent):
    return make_agent(name="Echo")


@pytest.fixture
def mailer(make_agent):
    return make_agent(name="Send mail", max_retries=3)


@pytest.fixture
def pipeline(make_agent, echo, mailer):
    """fetch, a 60 s wait, a parallel group (mail, chat), then report."""
    return make_agent(
        name="Nightly pipeline",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "Echo", "input": {"url": "{{ input.url }}"}},
                {"wait": {"seconds": 60}},
                {
                    "key": "notify",
                    "parallel": [
                        {"key": "mail", "agent": "Send mail"},
                        {"key": "chat", "agent": "Echo"},
                    ],
                },
                {"key": "report", "agent": "Echo"},
            ]
        },
    )


def run_of(flow: Execution, key: str) -> Execution:
    return FlowStep.objects.select_related("execution").get(flow=flow, key=key).execution


def work(run: Execution, status: str, *, attempts: int = 1, result=None, at=None) -> Execution:
    """Run a step's execution as a worker would: ``attempts`` more attempts, all but the last
    failing with a temporary error; the last is left running, fails with a temporary error
    (``retrying``), fails for good (``failed``) or succeeds."""
    at = at or timezone.now() - timedelta(seconds=10)
    made = run.attempt
    for number in range(made + 1, made + attempts + 1):
        claimed = execution_claim(
            execution_id=run.pk, expected_attempt=number - 1, worker="test-worker", at=at
        )
        assert claimed is not None
        run, opened = claimed
        at += timedelta(seconds=2)
        if number < made + attempts:
            assert attempt_fail(
                execution=run, number=number, error=failure("network", retryable=True), at=at
            )
    if status == "succeeded":
        assert attempt_succeed(execution=run, attempt=opened, result=result, at=at)
    elif status in ("retrying", "failed"):
        error = failure(
            "network" if status == "retrying" else "auth",
            retryable=status == "retrying",
            reason="The mail server said no.",
        )
        attempt_fail(execution=run, number=made + attempts, error=error, at=at)
    run.refresh_from_db()
    assert run.status == status, run.status
    return run


def advance(flow: Execution, *, at=None) -> Execution:
    """What ``executions.advance_flow`` does when a step's execution ends (and the dispatcher's
    tick once a wait is over: ``at`` past its end)."""
    flow_advance(flow_id=flow.pk, at=at)
    flow.refresh_from_db()
    return flow


# --- Reading the page -----------------------------------------------------------------------


class Timeline(HTMLParser):
    """The rows of the page's timeline (elements with ``data-step``): key, status, text, links."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.open: list[tuple[str, dict | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        row = None
        if "data-step" in attrs:
            row = {"status": attrs["data-status"], "text": "", "links": [], "parent": None}
            for _, outer in reversed(self.open):
                if outer is not None:
                    row["parent"] = next(k for k, r in self.rows.items() if r is outer)
                    break
            self.rows[attrs["data-step"]] = row
        if tag == "a":
            for _, r in [*self.open, (tag, row)]:
                if r is not None:
                    r["links"].append(attrs.get("href"))
        if tag not in ("br", "img", "input", "meta", "link"):
            self.open.append((tag, row))

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, row in self.open:
            if row is not None:
                row["text"] += data

    def text(self, key: str) -> str:
        return " ".join(self.rows[key]["text"].split())


def page(client, execution: Execution, *, live=False) -> str:
    name = "executions:live" if live else "executions:detail"
    response = client.get(reverse(name, args=[execution.uuid]))
    assert response.status_code == 200
    return response.content.decode()


def url(execution: Execution) -> str:
    return reverse("executions:detail", args=[execution.uuid])


# --- The timeline ---------------------------------------------------------------------------


def test_a_flow_that_has_just_started_shows_every_step_in_order_the_first_running(
    alice_client, pipeline
):
    flow = flow_started(pipeline, {"url": "https://example.com"})
    html = page(alice_client, flow)
    rows = Timeline(html)

    assert list(rows.rows) == ["fetch", "wait-2", "notify", "mail", "chat", "report"]
    assert [r["status"] for r in rows.rows.values()] == ["running"] + ["pending"] * 5
    # The parallel group's members sit under their group.
    assert rows.rows["mail"]["parent"] == rows.rows["chat"]["parent"] == "notify"
    assert rows.rows["report"]["parent"] is None
    fetch = run_of(flow, "fetch")
    assert "runs Echo" in rows.text("fetch") and "Queued" in rows.text("fetch")
    assert "Waiting for a worker" in rows.text("fetch")
    assert rows.rows["fetch"]["links"] == [url(fetch)]
    assert "waits 1 min" in rows.text("wait-2") and "Not started yet" in rows.text("wait-2")
    assert "2 steps in parallel" in rows.text("notify")
    assert "runs Send mail" in rows.text("mail") and "Pending" in rows.text("mail")
    assert rows.rows["report"]["links"] == []  # no run of its own yet
    # The flow's own attempt is not listed: the steps are what it does.
    assert "<h2>Attempts</h2>" not in html and "Attempt 1 of 1" not in html
    assert "Step 1 of 4: fetch" in html


def test_the_live_fragment_carries_the_timeline_and_keeps_polling_while_the_flow_runs(
    alice_client, pipeline
):
    flow = flow_started(pipeline, {"url": "u"})
    live = page(alice_client, flow, live=True)
    assert 'hx-trigger="every 1s"' in live and 'id="flow-steps"' in live

    work(run_of(flow, "fetch"), "running")
    rows = Timeline(page(alice_client, flow, live=True))
    assert rows.rows["fetch"]["status"] == "running"
    assert "attempt 1 of 4 · running for" in rows.text("fetch")


def test_a_step_shows_its_attempts_while_it_retries_and_once_it_has_ended(
    alice_client, pipeline, echo
):
    flow = flow_started(pipeline, {"url": "u"})
    work(run_of(flow, "fetch"), "succeeded", result={"body": "hi"})
    flow = advance(flow)
    flow = advance(flow, at=timezone.now() + timedelta(seconds=61))  # the wait is over
    mail = work(run_of(flow, "mail"), "retrying", attempts=1, at=timezone.now())
    work(run_of(flow, "chat"), "running", attempts=1)

    rows = Timeline(page(alice_client, flow))
    assert rows.rows["fetch"]["status"] == "succeeded"
    assert re.search(r"1 attempt · took [\d.]+ s", rows.text("fetch")), rows.text("fetch")
    assert "waited" in rows.text("wait-2")
    assert rows.rows["notify"]["status"] == "running"
    assert "Retrying (attempt 2 of 4)" in rows.text("mail")
    assert re.search(r"Attempt 1 failed · next attempt in \d+ s", rows.text("mail"))
    assert "Last attempt failed: Could not reach the service" in rows.text("mail")
    assert rows.rows["mail"]["links"] == [url(mail)]

    mail = work(mail, "succeeded", attempts=2)  # its second and third attempts
    html = page(alice_client, flow)
    assert "3 attempts · took" in Timeline(html).text("mail")


def test_a_waiting_flow_says_until_when_its_wait_step_waits(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    work(run_of(flow, "fetch"), "succeeded")
    flow = advance(flow)
    assert flow.wait_reason == "pause"
    wait = FlowStep.objects.get(flow=flow, key="wait-2")

    html = page(alice_client, flow)
    rows = Timeline(html)
    assert rows.rows["wait-2"]["status"] == "waiting"
    text = rows.text("wait-2")
    assert re.search(r"Waiting until .+ \(in (59 s|1 min)\)", text), text
    assert f'datetime="{wait.wait_until.isoformat()}"' in html
    assert 'id="wait-until"' in html  # the flow's own status line says so too


def test_a_failed_step_shows_its_error_and_the_rest_are_skipped(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    work(run_of(flow, "fetch"), "failed", attempts=1)
    flow = advance(flow)
    assert flow.status == "failed"

    html = page(alice_client, flow)
    rows = Timeline(html)
    assert rows.rows["fetch"]["status"] == "failed"
    assert "The service refused the credentials" in rows.text("fetch")
    assert "The mail server said no." in rows.text("fetch")
    for key in ("wait-2", "notify", "mail", "chat", "report"):
        assert rows.rows[key]["status"] == "skipped", key
        assert "Skipped: an earlier step did not succeed." in rows.text(key), key
    assert 'hx-trigger="every 1s"' not in html
    # An auth error is never retried: the retries the step had are not the point.
    assert "Step “fetch” failed after 1 attempt: The mail server said no." in html


def test_a_cancelled_flow_shows_its_running_step_cancelled(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    work(run_of(flow, "fetch"), "running")
    assert execution_cancel(execution=flow, by="alice")

    rows = Timeline(page(alice_client, flow))
    assert rows.rows["fetch"]["status"] == "cancelled"
    assert "Cancelled" in rows.text("fetch")
    assert rows.rows["report"]["status"] == "skipped"
    assert "Skipped: the flow was cancelled." in rows.text("report")


def test_a_retried_flow_links_each_reused_step_to_the_run_it_reuses(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    fetch = work(run_of(flow, "fetch"), "succeeded", result={"ok": True})
    flow = advance(flow)
    assert execution_cancel(execution=flow, by="alice")
    retried = execution_retry(execution=flow, by="alice")
    assert flow_start(execution_id=retried.pk, expected_attempt=0)

    rows = Timeline(page(alice_client, retried))
    assert rows.rows["fetch"]["status"] == "succeeded"
    assert "Reused" in rows.text("fetch") and "Reused from an earlier run" in rows.text("fetch")
    assert rows.rows["fetch"]["links"] == [url(fetch), url(fetch)]
    assert rows.rows["wait-2"]["status"] == "waiting"


def test_a_step_that_could_not_start_says_why(alice_client, make_agent, echo):
    flow_agent = make_agent(
        name="needs input",
        kind="flow",
        config={
            "steps": [
                {"key": "first", "agent": "Echo"},
                {"key": "second", "agent": "Echo", "input": {"v": "{{ steps.first.result.v }}"}},
            ]
        },
    )
    flow = flow_started(flow_agent)
    work(run_of(flow, "first"), "succeeded", result={"other": 1})
    flow = advance(flow)

    rows = Timeline(page(alice_client, flow))
    assert rows.rows["second"]["status"] == "failed"
    assert rows.rows["second"]["links"] == []
    assert "Invalid input" in rows.text("second") or "input" in rows.text("second").lower()
    assert "Could not start: {{ steps.first.result.v }}" in rows.text("second")


def test_a_queued_flow_shows_its_steps_as_planned(alice_client, pipeline):
    flow = execution_request(agent=pipeline, trigger="manual", input={"url": "u"})
    rows = Timeline(page(alice_client, flow))
    assert list(rows.rows) == ["fetch", "wait-2", "notify", "mail", "chat", "report"]
    assert {r["status"] for r in rows.rows.values()} == {"pending"}
    assert "runs Send mail" in rows.text("mail")


def test_every_step_status_renders(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    rows = Timeline(page(alice_client, flow))
    seen = {r["status"] for r in rows.rows.values()}
    # The statuses this flow has not reached yet are written on a row directly (no service
    # would, here): a status added later must render too.
    statuses = set(FlowStep.Status.values)
    for status in statuses - seen:
        FlowStep.objects.filter(flow=flow, key="report").update(status=status)
        rows = Timeline(page(alice_client, flow))
        assert rows.rows["report"]["status"] == status
        assert FlowStep.Status(status).label in rows.text("report")


def test_the_flow_page_runs_the_same_queries_however_many_steps_it_has(
    alice_client, make_agent, echo, django_assert_max_num_queries
):
    def flow_of(n):
        steps = [{"key": f"s{i}", "agent": "Echo"} for i in range(n)]
        return flow_started(make_agent(name=f"flow of {n}", kind="flow", config={"steps": steps}))

    small = flow_of(2)
    work(run_of(small, "s0"), "succeeded")
    small = advance(small)
    with CaptureQueriesContext(connection) as counted:
        page(alice_client, small)
    big = flow_of(4)
    for key in ("s0", "s1", "s2"):
        work(run_of(big, key), "succeeded")
        big = advance(big)
    with django_assert_max_num_queries(len(counted.captured_queries)):
        page(alice_client, big)


# --- A step's page, checkpoints -------------------------------------------------------------


def test_a_steps_page_links_back_to_its_flow(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    fetch = run_of(flow, "fetch")
    html = page(alice_client, fetch)
    link = re.search(r'<p class="step-of" id="step-of">(.*?)</p>', html, re.S)
    assert link is not None
    assert " ".join(re.sub("<[^>]+>", "", link.group(1)).split()) == (
        "Step “fetch” of flow Nightly pipeline"
    )
    assert f'href="{url(flow)}"' in link.group(1)
    assert 'id="flow-steps"' not in html  # a step is not a flow


def test_a_steps_failed_page_says_a_retry_of_it_runs_on_its_own(alice_client, pipeline):
    flow = flow_started(pipeline, {"url": "u"})
    fetch = work(run_of(flow, "fetch"), "failed")
    html = page(alice_client, fetch)
    assert "Retrying this step runs it again on its own" in html


def test_a_running_execution_shows_its_last_checkpoint(alice_client, make_agent, make_execution):
    agent = make_agent(config={"function": "demo.count"}, max_retries=2)
    execution = make_execution(agent, "running", ago=timedelta(seconds=30))
    live = page(alice_client, execution, live=True)
    assert 'id="checkpoint"' not in live

    context = ExecutionContext(
        execution=execution, agent=agent, deadline=timezone.now() + timedelta(minutes=1)
    )
    context.checkpoint({"done": 3})
    execution.refresh_from_db()
    live = page(alice_client, execution, live=True)
    found = re.search(r'<div id="checkpoint">(.*?)</div>', live, re.S)
    assert found is not None
    assert re.sub("<[^>]+>", "", found.group(1)).strip() == "Last checkpoint: just now"
    assert f'datetime="{execution.checkpoint_at.isoformat()}"' in found.group(1)
    assert "Last checkpoint" in page(alice_client, execution)  # in the details too
