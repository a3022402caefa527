"""The backlog panel in chromium at a phone's width and a desktop's: nothing overflows the page,
no chart label is cut off, a phone opens every chart at its newest end, the table refreshes on
its own, and screenshots (test-artifacts/screenshots/ops-backlog-*.png) for a person to look
at."""

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
    for _ in range(3):
        make_execution(sync, "succeeded", ago=timedelta(minutes=1), waited=0.05)
    make_execution(report, "queued", ago=timedelta(minutes=14))
    make_execution(sync, "succeeded", ago=timedelta(minutes=30), waited=100)  # "1 min 40 s"
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
    labels_inside(page)
    if width < 700:
        opened_at_the_newest_end(page)
    shot = screenshot(f"ops-backlog-page-{width}")
    panel.screenshot(path=str(shot.parent / f"ops-backlog-{width}.png"))


def labels_inside(page) -> None:
    """Every axis label of every chart lies within its chart (none cut off at an edge)."""
    outside = page.evaluate(
        """() => [...document.querySelectorAll("svg.chart")].flatMap(svg => {
            const box = svg.getBoundingClientRect();
            return [...svg.querySelectorAll("text.axis")].map(t => [t, t.getBoundingClientRect()])
              .filter(([, r]) => r.left < box.left - 0.5 || r.right > box.right + 0.5
                                 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
              .map(([t]) => svg.getAttribute("aria-label") + ": " + t.textContent);
        })"""
    )
    assert page.locator("svg.chart text.axis").count() > 10
    assert outside == [], outside


def opened_at_the_newest_end(page) -> None:
    """Each chart in a sideways-scrolling box is scrolled to its right end, the newest data."""
    boxes = page.evaluate(
        """() => [...document.querySelectorAll(".chart-scroll")].map(b => ({
            label: b.querySelector("svg").getAttribute("aria-label"),
            left: b.scrollLeft, room: b.scrollWidth - b.clientWidth}))"""
    )
    assert len(boxes) == 3  # the throughput, runs waiting and start latency charts
    for box in boxes:
        assert box["room"] > 100, box  # it does scroll at this width
        assert box["left"] >= box["room"] - 1, box


def test_the_backlog_table_and_the_now_counts_refresh_on_their_own(
    make_agent, make_execution, staff_page, live_server
):
    page = staff_page
    agent = make_agent(queue="ops-q9")
    page.goto(f"{live_server.url}/ops/")
    expect(page.locator("#backlog-now tr", has_text="ops-q9")).to_have_count(0)
    queued = page.locator("#live-counts .stat").first
    before = int(queued.inner_text())

    for _ in range(4):
        make_execution(agent, "queued", ago=timedelta(minutes=1))

    # The fragment is asked for every 10 s: the new runs show without reloading the page.
    row = page.locator("#backlog-now tr", has_text="ops-q9")
    expect(row).to_contain_text("4", timeout=15_000)
    expect(row).to_contain_text("not draining")
    expect(queued).to_have_text(str(before + 4))
