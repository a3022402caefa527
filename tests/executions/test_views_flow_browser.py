"""A flow's page in a real browser: chromium against ``live_server``, with the real worker
running the flow's steps, so the timeline is watched as a person sees it while htmx refreshes
it. Set-up in tests/browser.py; screenshots land in test-artifacts/screenshots/ (the desktop
one is also saved as docs/flow-page.png, the picture of a flow's page in the docs, when that
file is missing)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from playwright.sync_api import expect

from executions.models import Execution, FlowStep
from executions.services import execution_request
from tests.conftest import wait_for

BADGE = "#live .big .badge"
DOCS_PICTURE = Path(__file__).resolve().parents[2] / "docs" / "flow-page.png"

WIDER_THAN_THE_WINDOW = (
    "() => Array.from(document.querySelectorAll('body *'))"
    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)"
    ".slice(0, 10).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
    " + (e.className ? '.' + String(e.className).split(' ').join('.') : ''))"
)


def assert_fits(page, width: int) -> None:
    sizes = page.evaluate(
        "() => ({scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth})"
    )
    assert sizes["innerWidth"] == width
    assert sizes["scrollWidth"] <= width, (
        f"the page scrolls sideways at {width} px: {sizes}; wider elements: "
        f"{page.evaluate(WIDER_THAN_THE_WINDOW)}"
    )


def step(page, key: str):
    return page.locator(f'#flow-steps [data-step="{key}"]')


def test_a_running_flow_shows_its_steps_live_on_a_desktop_and_on_a_phone(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 1280, "height": 900})
    make_agent(name="Fetch orders")
    make_agent(name="Clean up orders", config={"function": "demo.flaky"}, max_retries=3)
    make_agent(name="Send summary mail", config={"function": "demo.slow"})
    make_agent(name="Post to chat")
    make_agent(name="Write report")
    flow_agent = make_agent(
        name="Nightly orders",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "Fetch orders", "input": {"day": "{{ input.day }}"}},
                {"key": "clean", "agent": "Clean up orders", "input": {"fail_times": 1}},
                {
                    "key": "notify",
                    "parallel": [
                        {
                            "key": "mail",
                            "agent": "Send summary mail",
                            "input": {"seconds": 60, "steps": 60},
                        },
                        {"key": "chat", "agent": "Post to chat", "input": {"text": "done"}},
                    ],
                },
                {"key": "cool-off", "wait": {"seconds": 600}},
                {"key": "report", "agent": "Write report"},
            ],
            "timeout": 3600,
        },
    )
    flow = execution_request(agent=flow_agent, trigger="manual", input={"day": "2026-11-30"})
    page.goto(f"{live_server.url}/executions/{flow.uuid}/")
    navigations: list[str] = []
    page.on(
        "framenavigated",
        lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
    )

    # The timeline follows the flow as htmx refreshes the live part: no reload.
    expect(step(page, "chat")).to_have_attribute("data-status", "succeeded", timeout=30_000)
    # Far enough into the slow step for its progress to show in the picture.
    expect(step(page, "mail").locator(".step-progress")).to_contain_text(
        re.compile(r"Step ([1-9]\d) of 60"), timeout=25_000
    )
    assert navigations == []
    expect(page.locator(BADGE)).to_have_text("Running")
    expect(page.locator("#live")).to_contain_text("Step 3 of 5: notify")
    expect(step(page, "fetch")).to_contain_text("1 attempt · took")
    expect(step(page, "clean")).to_contain_text("2 attempts · took")
    expect(step(page, "notify").locator(".badge").first).to_have_text("Running")
    expect(step(page, "mail").locator(".badge")).to_have_text("Running")
    expect(step(page, "cool-off")).to_contain_text("waits 10 min")
    expect(step(page, "report")).to_contain_text("Not started yet")
    statuses = page.eval_on_selector_all(
        "#flow-steps [data-step]", "rows => rows.map(r => [r.dataset.step, r.dataset.status])"
    )
    assert statuses == [
        ["fetch", "succeeded"],
        ["clean", "succeeded"],
        ["notify", "running"],
        ["mail", "running"],
        ["chat", "succeeded"],
        ["cool-off", "pending"],
        ["report", "pending"],
    ]
    assert_fits(page, 1280)
    shot = screenshot("f1-flow-running-desktop")
    if not DOCS_PICTURE.exists():  # delete it to take it again; kept otherwise (no churn)
        shutil.copyfile(shot, DOCS_PICTURE)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(1200)  # a refresh at the new width
    assert_fits(page, 390)
    screenshot("f2-flow-running-phone-390")

    # A step's link opens its own page, which links back to the flow.
    mail = FlowStep.objects.select_related("execution").get(flow=flow, key="mail").execution
    step(page, "mail").get_by_role("link", name="mail").click()
    page.wait_for_url(f"{live_server.url}/executions/{mail.uuid}/")
    expect(page.locator("#step-of")).to_have_text("Step “mail” of flow Nightly orders")
    assert_fits(page, 390)
    screenshot("f3-flow-step-page-phone-390")
    page.locator("#step-of").get_by_role("link", name="Nightly orders").click()
    page.wait_for_url(f"{live_server.url}/executions/{flow.uuid}/")

    # Cancelling the flow stops the running step and skips the rest, on the same page.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#live").get_by_role("button", name="Cancel").click()
    expect(page.locator(BADGE)).to_have_text("Cancelled", timeout=10_000)
    expect(step(page, "mail")).to_have_attribute("data-status", "cancelled")
    expect(step(page, "report")).to_contain_text("Skipped: the flow was cancelled.")
    assert wait_for(flow, "cancelled", timeout=5).status == Execution.Status.CANCELLED
    wait_for(mail, "cancelled", timeout=10)
    screenshot("f4-flow-cancelled-desktop")


def test_a_failed_flow_retried_from_its_page_reuses_the_step_that_succeeded(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 1280, "height": 900})
    make_agent(name="Fetch orders")
    make_agent(name="Import orders", config={"function": "demo.broken"})
    make_agent(name="Write report")
    flow_agent = make_agent(
        name="Import pipeline",
        kind="flow",
        config={
            "steps": [
                {"key": "fetch", "agent": "Fetch orders"},
                {"key": "import", "agent": "Import orders"},
                {"wait": {"seconds": 30}},
                {"key": "report", "agent": "Write report"},
            ]
        },
    )
    failed = execution_request(agent=flow_agent, trigger="manual")
    page.goto(f"{live_server.url}/executions/{failed.uuid}/")
    expect(page.locator(BADGE)).to_have_text("Failed", timeout=30_000)
    expect(step(page, "import")).to_have_attribute("data-status", "failed")
    expect(step(page, "import").locator(".step-error")).not_to_be_empty()
    expect(step(page, "wait-3")).to_contain_text("Skipped: an earlier step did not succeed.")
    expect(page.locator("#live .error-card")).to_contain_text(
        "Step “import” failed after 1 attempt"
    )
    screenshot("g1-flow-failed-desktop")
    fetch = FlowStep.objects.select_related("execution").get(flow=failed, key="fetch").execution

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#live").get_by_role("button", name="Retry").click()
    page.wait_for_url(lambda url: "/executions/" in url and str(failed.uuid) not in url)
    retried = Execution.objects.get(retry_of=failed)
    expect(page.locator(BADGE)).to_have_text("Failed", timeout=30_000)
    expect(step(page, "fetch").locator(".badge")).to_have_text("Reused")
    reused = step(page, "fetch").get_by_role("link", name="an earlier run")
    expect(reused).to_have_attribute("href", f"/executions/{fetch.uuid}/")
    expect(step(page, "import")).to_have_attribute("data-status", "failed")
    assert FlowStep.objects.get(flow=retried, key="fetch").reused_from == fetch
    assert_fits(page, 1280)
    screenshot("g2-flow-retried-reused-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert_fits(page, 390)
    screenshot("g3-flow-retried-reused-phone-390")


def test_a_flow_in_a_wait_step_says_until_when_it_waits(
    worker, alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    page.set_viewport_size({"width": 390, "height": 844})
    make_agent(name="Send reminder")
    flow_agent = make_agent(
        name="Reminder in ten minutes",
        kind="flow",
        config={
            "steps": [
                {"key": "acknowledge", "agent": "Send reminder"},
                {"key": "ten-minutes", "wait": {"seconds": 600}},
                {"key": "remind", "agent": "Send reminder"},
            ]
        },
    )
    flow = execution_request(agent=flow_agent, trigger="manual")
    page.goto(f"{live_server.url}/executions/{flow.uuid}/")
    expect(step(page, "ten-minutes")).to_have_attribute("data-status", "waiting", timeout=30_000)
    expect(step(page, "ten-minutes")).to_contain_text(re.compile(r"Waiting until .+ \(in 9 min"))
    expect(page.locator("#live #wait")).to_contain_text("Waiting before its next step")
    expect(page.locator(BADGE)).to_have_text("Running")
    assert_fits(page, 390)
    screenshot("h1-flow-waiting-phone-390")
    flow.refresh_from_db()
    assert flow.wait_reason == "pause"
