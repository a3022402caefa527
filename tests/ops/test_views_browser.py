"""The operators' pages in a real browser (chromium through Playwright, against ``live_server``
with the real worker): the dashboard and the execution admin, with screenshots in
test-artifacts/screenshots/ops-*.png for a person to look at."""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect


@pytest.fixture
def history(make_agent, make_execution, bob):
    """A week of varied executions over a few agents, and a few that need a look."""
    rng = random.Random(7)
    agents = [
        make_agent(name="invoice-sync", timeout=60),
        make_agent(name="crm-import"),
        make_agent(bob, name="nightly-report", queue="reports"),
        make_agent(bob, name="webhook-relay"),
    ]
    categories = ["timeout", "network", "upstream_error", "rate_limited", "auth"]
    for _ in range(400):
        agent = rng.choice(agents)
        ago = timedelta(minutes=rng.expovariate(1 / 600))
        status = rng.choices(["succeeded", "failed", "cancelled"], [85, 12, 3])[0]
        make_execution(
            agent,
            status,
            ago=min(ago, timedelta(days=6.9)),
            seconds=rng.lognormvariate(1.2, 1.0),
            error_category=rng.choice(categories) if status == "failed" else "",
            attempt=rng.choice([1, 1, 1, 2, 3]) if status != "cancelled" else 1,
        )
    make_execution(agents[0], "running", ago=timedelta(minutes=4))  # past its 60 s timeout
    make_execution(agents[2], "queued", ago=timedelta(minutes=12))
    make_execution(agents[1], "retrying", attempt=2)
    failed = make_execution(
        agents[0],
        "failed",
        error_category="timeout",
        attempt=3,
        seconds=60,
        reason="The attempt ran past the agent's time limit of 60 s and was stopped.",
        detail=(
            "Traceback (most recent call last):\n"
            '  File "/app/executions/runner.py", line 182, in run_attempt\n'
            "    result = kind.run(ctx, execution.input)\n"
            '  File "/app/agents/kinds/http.py", line 97, in run\n'
            "    response = client.send(request)\n"
            "celery.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded()"
        ),
    )
    failed.logs.create(attempt=3, at=timezone.now(), level="warning", message="Slow upstream")
    return failed


def test_the_dashboard_and_the_execution_admin_in_a_browser(
    worker, history, staff_page, live_server, screenshot
):
    page = staff_page
    page.goto(f"{live_server.url}/ops/")

    # The dashboard: figures, chart, and the workers panel that fills in after the page.
    expect(page.locator("h1")).to_have_text("Operations")
    expect(page.locator("#workers")).to_contain_text("online", timeout=10_000)
    expect(page.locator('svg.chart[aria-label^="Executions per"]')).to_be_visible()
    expect(page.locator("#stuck")).to_contain_text("invoice-sync")
    screenshot("ops-dashboard")

    page.get_by_role("link", name="Last 7 days").click()
    expect(page.locator(".segmented a.on")).to_have_text("Last 7 days")
    screenshot("ops-dashboard-7d")

    # A figure opens the admin list that explains it.
    page.locator("#overview a.figure", has_text="Failed").click()
    expect(page).to_have_url(re.compile(r"status__exact=failed"))
    expect(page.locator("#result_list")).to_contain_text("Failed")
    screenshot("ops-admin-executions-failed")

    page.goto(f"{live_server.url}/admin/executions/execution/")
    expect(page.locator(".paginator")).to_contain_text("executions")
    screenshot("ops-admin-executions")

    page.goto(f"{live_server.url}/admin/executions/execution/{history.pk}/change/")
    expect(page.locator("pre.conveyor-traceback")).to_contain_text("SoftTimeLimitExceeded")
    expect(page.locator("body")).to_contain_text("Slow upstream")
    screenshot("ops-admin-execution-detail")

    page.goto(f"{live_server.url}/admin/agents/agent/")
    expect(page.locator("#result_list")).to_contain_text("nightly-report")
    screenshot("ops-admin-agents")

    # Retry from the list: select the failed one, run the action, read the report.
    page.goto(f"{live_server.url}/admin/executions/execution/?q={history.uuid}")
    page.locator("input.action-select").first.check()
    page.select_option("select[name=action]", "retry_selected")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_have_text("1 retried.")
    screenshot("ops-admin-retry-message")


def test_the_dashboard_shows_messages_set_aside_and_still_fits_a_phone(
    staff_page, live_server, screenshot, settings
):
    import redis

    from config.broker import malformed_key

    key = malformed_key(settings.CONVEYOR_EXECUTIONS_QUEUE)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.lpush(key, b"not json", b"[1, 2]")
    try:
        page = staff_page
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/ops/")
        notice = page.locator(f"#malformed-{settings.CONVEYOR_EXECUTIONS_QUEUE}")
        expect(notice).to_contain_text("2 unreadable messages on")
        notice.scroll_into_view_if_needed()
        screenshot("o3-dashboard-malformed-390")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390
    finally:
        client.delete(key)
        client.close()
