"""Waits and limits as people see them, in chromium (tests/browser.py): an execution page
waiting for a slot and the dashboard's capacity panel, on a phone (390 px) and a desktop
(1280 px), with screenshots in test-artifacts/screenshots/ for a person to look at.

No worker: the runs are made through the services and held (no message is sent); the wait on
the limit is recorded as the worker's claim records it."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, Limiter

WIDTHS = {"phone": 390, "desktop": 1280}


def waits(execution: Execution, reason: str, on: str) -> Execution:
    Execution.objects.filter(pk=execution.pk).update(wait_reason=reason, waits_on=on)
    return execution


def fits_the_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_run_waiting_for_a_slot_says_why_on_a_phone_and_a_desktop(
    alice_page, live_server, make_agent, make_execution, screenshot, screenshot_dir
):
    agent = make_agent(
        name="Invoice sync to the accounting system",
        max_concurrency=2,
        rate_limit="30/hour",
        breaker_threshold=5,
    )
    holding = [make_execution(agent, "running", ago=timedelta(minutes=m)) for m in (3, 1)]
    run = make_execution(agent, "queued", hold=True, ago=timedelta(seconds=40))
    waits(run, "slot", f"agent:{agent.uuid}")
    page = alice_page

    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/executions/{run.uuid}/")
        wait = page.locator("#wait")
        expect(wait).to_contain_text("Waiting for a slot: 2 of 2 busy.")
        expect(wait.locator("#wait-runs a")).to_have_count(2)
        page.wait_for_timeout(1200)  # one refresh of the live part: it stays
        expect(page.locator("#wait")).to_have_attribute("data-wait-reason", "slot")
        assert fits_the_width(page), f"the page is wider than the {width} px screen"
        screenshot(f"wait-slot-{name}")

    page.locator("#wait-runs a").first.click()
    expect(page).to_have_url(f"{live_server.url}/executions/{holding[0].uuid}/")

    # The agent's page shows the limit and its use.
    page.goto(f"{live_server.url}/agents/{agent.uuid}/")
    expect(page.locator("#limit-agent-concurrency")).to_have_text(
        "2 of 2 running, 1 waiting for a slot"
    )
    page.locator("#limits").screenshot(path=str(screenshot_dir / "agent-limits.png"))


def test_the_capacity_panel_on_a_phone_and_a_desktop(
    staff_page, live_server, make_agent, make_execution, settings, bob, screenshot_dir
):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Nightly reports", "concurrency": 4},
    }
    sync = make_agent(name="Invoice sync", max_concurrency=2, breaker_threshold=3)
    for _ in range(2):
        make_execution(sync, "running")
    for _ in range(3):
        waits(make_execution(sync, "queued", hold=True), "slot", f"agent:{sync.uuid}")
    make_execution(make_agent(bob, name="Nightly report", max_concurrency=1, queue="reports"),
                   "running")  # fmt: skip
    Limiter.objects.update_or_create(
        key=f"agent:{sync.uuid}",
        defaults={
            "state": Limiter.State.OPEN,
            "failures": 3,
            "last_failure": "The service answered 503 Service Unavailable: upstream maintenance "
            "window until 06:00 UTC.",
            "opened_at": timezone.now() - timedelta(minutes=2),
            "probe_at": timezone.now() + timedelta(seconds=50),
        },
    )
    Limiter.objects.update_or_create(
        key="host:api.payments-provider.example.com",
        defaults={"state": Limiter.State.HALF_OPEN, "failures": 5, "opened_at": timezone.now()},
    )
    page = staff_page

    for name, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/ops/")
        panel = page.locator("#capacity")
        expect(panel.locator("li.breaker")).to_have_count(2)
        expect(panel.get_by_role("button", name="Close")).to_have_count(2)
        expect(panel.locator("tr.slot-use")).to_have_count(3)
        assert fits_the_width(page), f"the dashboard is wider than the {width} px screen"
        panel.screenshot(path=str(screenshot_dir / f"ops-capacity-{name}.png"))

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'li.breaker[data-key="agent:{sync.uuid}"]').get_by_role(
        "button", name="Close"
    ).click()
    expect(page.locator("main .notice").first).to_contain_text("closed")
    expect(page.locator("#capacity li.breaker")).to_have_count(1)
