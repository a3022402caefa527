"""An agent worse than its usual, in a real browser (chromium through Playwright, against
``live_server``): its page's "Against its usual" card and the dashboard's panel, with
screenshots in test-artifacts/screenshots/usual-*.png for a person to look at."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from ops import baseline
from ops.rollups import roll_up
from tests.ops.test_baseline import runs, usual_runs


@pytest.fixture
def slow(make_agent, make_execution):
    """An agent whose runs took about a second for two weeks and three over the last day, with
    its regression opened by the check."""
    now = timezone.now()
    agent = make_agent(name="invoice-sync")
    usual_runs(make_execution, agent, end=now)
    runs(make_execution, agent, end=now, n=50, seconds=3.0)
    roll_up(until=now)
    assert baseline.check(now=now).opened == 1
    return agent


@pytest.mark.parametrize("width", [390, 1280])
def test_the_agent_page_shows_it_slower_than_usual(
    slow, alice_page, live_server, screenshot, width
):
    page = alice_page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/agents/{slow.uuid}/")
    card = page.locator("#usual")
    expect(card).to_contain_text("Slower than usual")
    expect(card).to_contain_text("in regression since")
    expect(page.locator("#usual-p95")).to_have_attribute("data-state", "worse")
    expect(page.locator("#usual-p95 .badge")).to_have_text("slower")
    card.scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(f"usual-agent-{width}")
    card.screenshot(path=str(_card_path(width)))


def _card_path(width: int):
    from tests.browser import SCREENSHOTS

    return SCREENSHOTS / f"usual-agent-card-{width}.png"


def test_the_dashboard_lists_it(slow, staff_page, live_server, screenshot):
    page = staff_page
    page.goto(f"{live_server.url}/ops/")
    panel = page.locator("#regressions")
    expect(panel).to_contain_text("invoice-sync")
    expect(panel).to_contain_text("Slower than usual")
    panel.scroll_into_view_if_needed()
    screenshot("usual-dashboard")
    panel.screenshot(path=str(_card_path(0).with_name("usual-dashboard-panel.png")))


def test_the_dashboard_says_when_no_agent_is_worse(staff_page, live_server):
    staff_page.goto(f"{live_server.url}/ops/")
    expect(staff_page.locator("#regressions")).to_contain_text("No agent is worse than its usual")


def test_the_form_sets_the_thresholds_in_words(slow, alice_page, live_server):
    page = alice_page
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto(f"{live_server.url}/agents/{slow.uuid}/edit/")
    fieldset = page.locator("fieldset#usual")
    expect(fieldset).to_contain_text("Against its usual")
    page.get_by_label("Slower than usual by (%)").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#usual")).to_contain_text("the success rate is 10 points lower")
    assert page.goto(f"{live_server.url}/agents/{slow.uuid}/edit/").ok
    page.locator("fieldset#usual").screenshot(path=str(_card_path(0).with_name("usual-form.png")))
    slow.refresh_from_db()
    assert slow.regression_p95_percent is None
