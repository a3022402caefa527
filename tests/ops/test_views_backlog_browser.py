"""The backlog panel in chromium at a phone's width and a desktop's: nothing overflows the page,
and screenshots (test-artifacts/screenshots/ops-backlog-*.png) for a person to look at."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from ops import backlog
from ops.models import QueueSample
from ops.rollups import roll_up


@pytest.fixture
def busy_day(make_agent, make_execution):
    """A day of samples of two queues, runs that waited before they started, and a backlog now."""
    rng = random.Random(3)
    sync, report = make_agent(name="invoice-sync"), make_agent(name="report", queue="reports")
    now = timezone.now()
    for minute in range(0, 24 * 60, 5):
        at = backlog.floor_minute(now - timedelta(minutes=minute))
        for queue, scale in (("test-executions", 40), ("reports", 12)):
            queued = max(0, int(rng.gauss(scale, scale / 2))) if minute % 300 < 200 else 0
            QueueSample.objects.create(at=at, queue=queue, queued=queued, oldest_age=queued * 3)
    for _ in range(60):
        ago = timedelta(minutes=rng.uniform(1, 23 * 60))
        make_execution(sync, "succeeded", ago=ago, waited=rng.lognormvariate(0, 1.5))
    for _ in range(25):
        make_execution(sync, "queued", ago=timedelta(minutes=rng.uniform(0, 6)))
    for _ in range(8):
        make_execution(sync, "succeeded", ago=timedelta(minutes=4), waited=0.05)
    make_execution(report, "queued", ago=timedelta(minutes=14))
    roll_up(until=timezone.now())


def no_overflow(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport, f"the page is {width} px wide in a {viewport} px window"


@pytest.mark.parametrize("width", [390, 1280])
def test_the_backlog_panel_fits_a_phone_and_a_desktop(
    busy_day, staff_page, live_server, screenshot, width
):
    page = staff_page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server.url}/ops/?window=24h")

    panel = page.locator("#backlog")
    expect(panel).to_contain_text("about")
    expect(panel).to_contain_text("not draining")
    expect(panel.locator("svg.chart")).to_have_count(2)
    no_overflow(page)
    shot = screenshot(f"ops-backlog-page-{width}")
    panel.screenshot(path=str(shot.parent / f"ops-backlog-{width}.png"))
