"""The Schedules card and the schedule form in a real browser (chromium through Playwright,
against ``live_server``), in a New York time zone. Screenshots: test-artifacts/screenshots/."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents.models import SkippedSlot
from agents.schedule_services import schedule_create, schedule_pause
from executions.models import Execution

# A person in New York: the page shows times in their zone.
pytestmark = pytest.mark.browser_context_args(
    timezone_id="America/New_York", viewport={"width": 1280, "height": 900}
)


def with_history(make_execution, agent, schedule):
    """Two runs of the schedule (one finished, one failed) and a skipped slot."""
    now = timezone.now().replace(microsecond=0)
    for minutes, final in ((10, "succeeded"), (5, "failed")):
        slot = now - timedelta(minutes=minutes)
        make_execution(
            agent, final, trigger="schedule", schedule=schedule, scheduled_for=slot, at=slot,
            seconds=2,
        )  # fmt: skip
    SkippedSlot.objects.create(
        schedule=schedule, slot_at=now, reason="the previous run was still running", at=now
    )


def test_the_agent_page_shows_each_schedule_in_words_with_its_next_runs(
    alice_page, live_server, make_agent, make_execution, screenshot
):
    page = alice_page
    agent = make_agent(name="nightly-report", description="Sends the daily report.")
    weekdays = schedule_create(
        agent=agent,
        kind="cron",
        cron="0 9 * * 1-5",
        timezone="Europe/Paris",
        input={"report": "daily"},
    )
    schedule_create(agent=agent, kind="cron", cron="30 2 * * *", timezone="Europe/Paris")
    paused = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    schedule_pause(schedule=paused)
    with_history(make_execution, agent, weekdays)

    page.goto(f"{live_server.url}/agents/{agent.uuid}/")
    card = page.locator("#schedules")
    expect(card).to_contain_text("Every weekday at 09:00 Europe/Paris")
    expect(card).to_contain_text("Every day at 02:30 Europe/Paris")
    expect(card).to_contain_text("Every 5 minutes")
    expect(card).to_contain_text("Times in America/New_York")
    expect(card).to_contain_text("Daylight saving: On ")
    expect(card).to_contain_text("No runs until it is resumed")
    expect(card.locator(f"#schedule-{weekdays.uuid} ol.next-runs li")).to_have_count(5)
    expect(card.locator("table.scheduled-slots tr")).to_have_count(3)
    expect(card).to_contain_text("The previous run was still running")
    screenshot("schedules-agent-page")
    card.screenshot(path=str(screenshot("schedules-agent-page").with_name("schedules-card.png")))


def test_the_form_shows_the_fields_of_the_chosen_kind_and_adds_the_schedule(
    alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    agent = make_agent(name="sync-inventory")
    page.goto(f"{live_server.url}/agents/{agent.uuid}/")
    page.locator("#schedules").get_by_role("link", name="Add schedule").click()

    cron, interval = page.locator("#id_cron"), page.locator("#id_interval_seconds")
    expect(cron).to_be_visible()
    expect(interval).to_be_hidden()
    expect(page.locator("#id_timezone")).to_have_value("America/New_York")
    screenshot("schedules-form-cron")

    page.get_by_label("Every N seconds").check()
    expect(interval).to_be_visible()
    expect(cron).to_be_hidden()
    interval.fill("120")
    page.get_by_role("button", name="Add schedule").click()

    expect(page.locator("main")).to_contain_text("Schedule added: every 2 minutes.")
    expect(page.locator("#schedules")).to_contain_text("Every 2 minutes")
    screenshot("schedules-added")


def test_run_later_queues_a_delayed_run_from_the_agent_page(
    alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    agent = make_agent(name="weekly-digest")
    page.goto(f"{live_server.url}/agents/{agent.uuid}/")
    page.get_by_text("Start later").click()
    page.locator("#id_delay").fill("90")
    page.locator("#id_delay_unit").select_option("minutes")
    expect(page.locator("#delay-preview")).to_contain_text(
        re.compile(r"Starts about \d+ \w{3} \d{4}, ")
    )
    page.locator("#run-form").screenshot(
        path=str(screenshot("schedules-run-later").with_name("schedules-run-later-form.png"))
    )
    page.get_by_role("button", name="Run later").click()

    page.wait_for_url(re.compile(r"/executions/[0-9a-f-]{36}/$"))
    expect(page.locator("#live")).to_contain_text("Delayed until its start time")
    expect(page.locator("#delayed-until")).to_be_visible()
    execution = Execution.objects.get(agent=agent)
    assert execution.status == "queued"
    assert timedelta(minutes=89) < execution.not_before - timezone.now() <= timedelta(minutes=90)
    screenshot("schedules-delayed-run")


def test_the_form_previews_the_next_runs_while_typing(
    alice_page, live_server, make_agent, screenshot
):
    page = alice_page
    agent = make_agent(name="morning-digest")
    page.goto(f"{live_server.url}/agents/{agent.uuid}/schedules/new/")
    preview = page.locator("#schedule-preview")
    expect(preview).to_contain_text("Fill in when it runs")

    page.locator("#id_cron").fill("0 9 * * 1-5")
    page.locator("#id_timezone").fill("Europe/Paris")
    expect(preview).to_contain_text("Every weekday at 09:00 Europe/Paris")
    expect(preview.locator("li")).to_have_count(5)
    expect(preview.locator("li").first).to_contain_text(", 09:00:00 in Europe/Paris")
    expect(preview).to_contain_text("Times in America/New_York, then in Europe/Paris.")
    screenshot("schedules-form-preview")

    page.locator("#id_cron").fill("0 25 * * *")
    expect(preview.locator("li")).to_have_count(0)
    assert not agent.schedules.exists()
