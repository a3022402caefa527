"""The pages in a real browser: chromium driven by Playwright against ``live_server``, with the
real Celery worker running the executions, so the live execution page is watched as a person
sees it (htmx polling, confirm dialogs, redirects). Set-up in tests/browser.py.

Screenshots land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import expect

from agents.models import Agent
from executions.models import Execution
from executions.services import execution_request
from tests.conftest import wait_for

BADGE = "#live .big .badge"  # the execution's status badge at the top of the live part
EXECUTION_URL = re.compile(r"/executions/(?P<uuid>[0-9a-f-]{36})/$")


def execution_url(live_server, execution: Execution) -> str:
    return f"{live_server.url}/executions/{execution.uuid}/"


def badge_text(page) -> str | None:
    """The badge text right now, read in one go (htmx replaces the element every second)."""
    return page.evaluate(
        "sel => { const b = document.querySelector(sel); return b ? b.textContent.trim() : null }",
        BADGE,
    )


def watch_badge(page, *, until: str, timeout: float = 25, on_change=None) -> list[str]:
    """Poll the badge until it reads ``until``; returns the distinct texts seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        text = badge_text(page)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
            if on_change:
                on_change(text)
        if text == until:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"the badge never read {until!r}; it read, in order: {seen}")
        page.wait_for_timeout(100)


def run_now(page, input_json: str) -> None:
    """Type the input in the agent page's Run now form and submit it."""
    page.locator("#run-form textarea").fill(input_json)
    page.locator("#run-form").get_by_role("button", name="Run now").click()


def test_a_person_creates_a_function_agent_and_watches_a_flaky_run_retry_then_succeed(
    worker, alice_page, live_server, screenshot
):
    page = alice_page

    # Agents → New agent → Python function.
    page.locator("header nav").get_by_role("link", name="Agents").click()
    page.get_by_role("link", name="New agent").click()
    page.locator("a.card", has_text="Python function").click()
    expect(page.locator("h1")).to_have_text("New agent: Python function")

    page.fill("#id_agent-name", "flaky demo")
    page.select_option("select[name='config-function']", "demo.flaky")
    page.fill("#id_agent-retry_backoff", "2")
    page.uncheck("#id_agent-retry_jitter")
    # The temporary categories, demo.flaky's "upstream_error" among them, come ticked.
    screenshot("a0-new-agent-form-filled")
    page.get_by_role("button", name="Create agent").click()

    # The agent page, with the agent as typed.
    expect(page.locator("h1")).to_contain_text("flaky demo")
    agent = Agent.objects.get(name="flaky demo")
    assert page.url == f"{live_server.url}/agents/{agent.uuid}/"
    assert agent.config == {"function": "demo.flaky"}
    assert (agent.retry_backoff, agent.retry_jitter, agent.max_retries) == (2, False, 3)
    assert "upstream_error" in agent.retry_on
    expect(page.locator(".notice-ok")).to_contain_text("created")
    screenshot("a1-agent-page-before-run")

    # Run now: htmx sends the browser to the new execution's page.
    run_now(page, json.dumps({"fail_times": 2, "seconds": 1.5}))
    page.wait_for_url(EXECUTION_URL)
    execution = Execution.objects.get(agent=agent)
    assert execution.input == {"fail_times": 2, "seconds": 1.5}
    arrived_at = page.url
    assert arrived_at == execution_url(live_server, execution)

    # From here on the page must update itself: no navigation of any kind.
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )
    urls_seen: set[str] = set()
    screenshots_taken: set[str] = set()

    def on_change(text: str) -> None:
        urls_seen.add(page.url)
        if text.startswith("Retrying") and "retrying" not in screenshots_taken:
            screenshots_taken.add("retrying")
            screenshot("a2-execution-page-retrying")

    seen = watch_badge(page, until="Succeeded", on_change=on_change)

    # max_retries 3, so 4 attempts: after the first failure the badge reads
    # "Retrying (attempt 2 of 4)", the attempt it waits to start.
    # Each attempt works 1.5 s, so the running attempts between the waits are seen too.
    assert seen[0] in {"Queued", "Running"}, seen
    assert "Running (attempt 2 of 4)" in seen and "Running (attempt 3 of 4)" in seen, seen
    assert (
        seen.index("Retrying (attempt 2 of 4)")
        < seen.index("Running (attempt 2 of 4)")
        < seen.index("Retrying (attempt 3 of 4)")
        < seen.index("Running (attempt 3 of 4)")
        < seen.index("Succeeded")
    ), seen
    assert "Retrying (attempt 2 of 4)" in seen, seen
    assert seen.index("Retrying (attempt 2 of 4)") < seen.index("Succeeded"), seen
    # The 4 s wait before the third attempt is long enough to be seen with 1 s polling.
    assert "Retrying (attempt 3 of 4)" in seen, seen
    assert (
        seen.index("Retrying (attempt 2 of 4)")
        < seen.index("Retrying (attempt 3 of 4)")
        < seen.index("Succeeded")
    )
    assert navigations == [], navigations
    assert urls_seen == {arrived_at} and page.url == arrived_at

    expect(page.locator("#live")).to_contain_text("over 3 attempts")
    expect(page.locator("#live .timeline li")).to_have_count(3)
    expect(page.locator("#live")).to_contain_text('"succeeded_on_attempt": 3')
    execution.refresh_from_db()
    assert execution.status == "succeeded" and execution.attempt == 3
    screenshot("a3-execution-page-succeeded")


def test_a_slow_run_is_cancelled_from_its_page_without_a_reload(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    agent = make_agent(config={"function": "demo.slow"})
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 30, "steps": 30})
    page.goto(execution_url(live_server, execution))
    expect(page.locator(BADGE)).to_have_text("Running", timeout=15_000)
    expect(page.locator("#live")).to_contain_text(re.compile(r"Step \d+ of 30"), timeout=10_000)
    screenshot("b0-execution-page-running")
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    dialogs: list[str] = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator("#live").get_by_role("button", name="Cancel").click()

    expect(page.locator(BADGE)).to_have_text("Cancelled", timeout=10_000)
    assert dialogs == ["Cancel this run? It will stop and not be retried."]
    expect(page.locator("#live").get_by_role("button", name="Cancel")).to_have_count(0)
    assert navigations == [] and page.url == execution_url(live_server, execution)
    execution = wait_for(execution, "cancelled", timeout=5)
    assert execution.finished_at is not None
    screenshot("b1-execution-page-cancelled")

    # The worker closes the attempt once the function notices the cancel; a fresh load of
    # the page shows that (the live part stopped polling when the run became final).
    deadline = time.monotonic() + 10
    while not execution.attempts.exclude(outcome="").exists():
        assert time.monotonic() < deadline, "the worker never closed the cancelled attempt"
        time.sleep(0.1)
    page.reload()
    expect(page.locator("#live .timeline li")).to_contain_text("cancelled")
    screenshot("b2-execution-page-cancelled-after-reload")


def test_a_failed_run_is_retried_with_edited_input_and_the_new_run_succeeds(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    agent = make_agent(config={"function": "demo.flaky"}, max_retries=0)
    failed = execution_request(agent=agent, trigger="manual", input={"fail_times": 5})
    page.goto(execution_url(live_server, failed))
    expect(page.locator(BADGE)).to_have_text("Failed", timeout=15_000)
    expect(page.locator("#live .error-card")).to_contain_text("temporarily unavailable")
    screenshot("c1-execution-page-failed")

    page.locator("#retry-edit summary").click()
    textarea = page.locator("#retry-edit textarea")
    expect(textarea).to_be_visible()
    assert json.loads(textarea.input_value()) == {"fail_times": 5}
    textarea.fill(json.dumps({"fail_times": 0}))
    screenshot("c2-execution-page-retry-with-different-input")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Retry with this input").click()

    page.wait_for_url(
        lambda url: EXECUTION_URL.search(url) is not None and str(failed.uuid) not in url
    )
    new = Execution.objects.get(retry_of=failed)
    assert page.url == execution_url(live_server, new)
    assert new.input == {"fail_times": 0} and new.agent == agent
    expect(page.locator(BADGE)).to_have_text("Succeeded", timeout=15_000)
    expect(page.locator("main")).to_contain_text("retry of an earlier run")
    assert wait_for(new, "succeeded", timeout=5).result == {"succeeded_on_attempt": 1}
    failed.refresh_from_db()
    assert failed.status == "failed"
    screenshot("c3-retried-execution-succeeded")


def test_the_live_page_polls_while_the_run_is_active_and_stops_once_it_is_final(
    worker, alice_page, live_server, make_agent
):
    page = alice_page
    agent = make_agent(config={"function": "demo.slow"})
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 2, "steps": 4})
    polls: list[str] = []
    page.on(
        "request", lambda request: polls.append(request.url) if "/live/" in request.url else None
    )

    page.goto(execution_url(live_server, execution))
    expect(page.locator(BADGE)).to_have_text("Succeeded", timeout=20_000)
    polled_while_active = len(polls)
    assert polled_while_active >= 1, "the page never polled while the run was active"
    assert all(url.endswith(f"/executions/{execution.uuid}/live/") for url in polls)
    expect(page.locator("#live")).not_to_have_attribute("hx-get", re.compile("."))

    page.wait_for_timeout(2500)  # more than two polling periods
    assert len(polls) == polled_while_active, f"still polling after success: {polls}"


def test_the_execution_page_fits_a_phone_screen_without_horizontal_scrolling(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 390, "height": 844})
    # A run with the most on its page: two attempts, logs, the error card, the retry form.
    agent = make_agent(
        name="a phone-sized agent with a rather long name",
        config={"function": "demo.flaky"},
        max_retries=1,
    )
    execution = execution_request(agent=agent, trigger="manual", input={"fail_times": 5})
    page.goto(execution_url(live_server, execution))
    expect(page.locator(BADGE)).to_have_text("Failed after 2 attempts", timeout=15_000)
    page.locator("#error-detail summary").click()
    page.locator("#retry-edit summary").click()

    sizes = page.evaluate(
        "() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth})"
    )
    screenshot("e1-execution-page-phone-390")
    assert sizes["innerWidth"] == 390
    assert sizes["scrollWidth"] <= sizes["innerWidth"], (
        f"the page scrolls sideways on a phone: {sizes}; wider elements: "
        + str(
            page.evaluate(
                "() => Array.from(document.querySelectorAll('body *'))"
                ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)"
                ".slice(0, 10).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
                " + (e.className ? '.' + String(e.className).split(' ').join('.') : ''))"
            )
        )
    )


def test_a_delayed_run_is_listed_as_starting_in_a_while(
    alice_page, live_server, make_agent, make_execution, screenshot
):
    agent = make_agent(name="weekly-digest", max_retries=3)
    make_execution(agent, "retrying", attempt=1)
    make_execution(agent, "succeeded", attempt=2)
    execution_request(
        agent=agent, trigger="manual", not_before=timezone.now() + timedelta(minutes=19, seconds=10)
    )
    page = alice_page
    page.goto(f"{live_server.url}/executions/")
    rows = page.locator("table tbody tr")
    expect(rows.first).to_contain_text("starts in 19 min")
    expect(page.locator("main")).to_contain_text("Retrying (attempt 2 of 4)")
    screenshot("executions-list-delayed")
    page.goto(f"{live_server.url}/")
    expect(page.locator("main")).to_contain_text("starts in 19 min")
    screenshot("home-delayed")


def test_a_running_attempt_whose_worker_went_silent_says_so_on_its_page(
    alice_page, live_server, make_agent, make_execution, screenshot, settings
):
    page = alice_page
    page.set_viewport_size({"width": 390, "height": 844})
    agent = make_agent(name="nightly export", max_retries=2)
    execution = make_execution(agent, "running", ago=timedelta(seconds=40))
    Execution.objects.filter(pk=execution.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=3 * settings.CONVEYOR_HEARTBEAT_INTERVAL)
    )
    page.goto(execution_url(live_server, execution))
    warning = page.locator("#worker-silent")
    expect(warning).to_contain_text("No sign of life from its worker for")
    expect(warning).to_contain_text("the attempt is taken for lost and retried")
    screenshot("e2-execution-page-worker-silent-390")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390
