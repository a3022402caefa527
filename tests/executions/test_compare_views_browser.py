"""The compare page in chromium, on two runs the real worker ran, of an agent whose
configuration changed between them: the configuration difference and the input difference are
on the page, which fits a phone and a desktop without sideways scrolling."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agents.services import agent_update
from executions.services import execution_request
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

OVERFLOW = """() => ({
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  wider: Array.from(document.querySelectorAll('main *'))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
    .slice(0, 5).map(e => e.tagName + '.' + e.className),
})"""


def test_two_runs_of_a_changed_agent_side_by_side(
    worker, alice_page, live_server, make_agent, screenshot
):
    agent = make_agent(name="nightly import", config={"function": "demo.echo"}, max_retries=1)
    yesterday = execution_request(
        agent=agent,
        trigger="manual",
        input={"fail_times": 0, "source": {"url": "https://example.com/" + "a" * 300}},
    )
    wait_for(yesterday, "succeeded")
    agent_update(agent=agent, config={"function": "demo.flaky"}, timeout=12)
    today = execution_request(
        agent=agent,
        trigger="manual",
        input={"fail_times": 5, "source": {"url": "https://example.com/" + "b" * 300}},
    )
    wait_for(today, "failed")
    assert today.agent_version > yesterday.agent_version

    page = alice_page
    page.set_viewport_size({"width": 1280, "height": 900})
    # From the failed run's page: "Compare with… its last success".
    page.goto(f"{live_server.url}/executions/{today.uuid}/")
    page.locator("#compare-last-success").click()
    page.wait_for_url(f"{live_server.url}/executions/{today.uuid}/compare/{yesterday.uuid}/")

    summary = page.locator("#config-summary")
    expect(summary).to_have_text(
        f"Configuration changed between these runs: version {yesterday.agent_version} → "
        f"{today.agent_version}."
    )
    config_paths = page.locator("#compare-config .diff-path").all_inner_texts()
    assert config_paths == ["config.function", "timeout"]
    input_paths = page.locator("#compare-input .diff-path").all_inner_texts()
    assert input_paths == ["fail_times", "source.url"]
    expect(page.locator("#compare-input .diff-changed").first.locator(".diff-old")).to_have_text(
        "0"
    )
    # The real runs' attempts: one on the left, two on the right, with the wait to retry.
    expect(page.locator("#compare-attempts > ol > li")).to_have_count(2)
    expect(page.locator("#compare-attempts")).to_contain_text("waiting to retry")
    expect(page.locator("#compare-logs")).to_contain_text("Simulating a temporary outage")
    expect(page.locator("#compare-logs")).to_contain_text("Echoing the input back.")

    sizes = page.evaluate(OVERFLOW)
    screenshot("compare-runs-1280")
    assert sizes["scrollWidth"] <= sizes["innerWidth"], sizes

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.locator("#config-summary")).to_be_visible()
    sizes = page.evaluate(OVERFLOW)
    screenshot("compare-runs-390")
    assert sizes["innerWidth"] == 390
    assert sizes["scrollWidth"] <= sizes["innerWidth"], sizes
    assert sizes["wider"] == [], sizes
