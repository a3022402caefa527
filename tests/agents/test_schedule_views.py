"""The schedule parts of the pages, through Django's test client: the agent page's Schedules card,
the schedule form, Run later, the overlap policy on the agent form, and the execution page."""

import re
from datetime import timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from agents.models import Schedule, SkippedSlot
from agents.schedule_services import schedule_create, schedule_pause
from executions.models import Execution
from executions.services import execution_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(alice_client):
    """Alice's client, in New York: her browser reports that zone."""
    alice_client.cookies["tz"] = "America/New_York"
    return alice_client


def page_of(client, agent):
    response = client.get(reverse("agents:detail", args=[agent.uuid]))
    assert response.status_code == 200
    return response.content.decode()


def schedules_card(html):
    start = html.index('id="schedules"')
    return unescape(html[start : html.index("</section>", start)])


def test_an_agent_without_schedules_says_how_to_add_one(alice_client, make_agent):
    card = schedules_card(page_of(alice_client, make_agent()))
    assert "No schedule yet" in card and "Add schedule" in card


def test_adding_a_cron_schedule_shows_it_in_words_with_five_next_runs_in_my_zone(
    alice_client, make_agent
):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:schedule_new", args=[agent.uuid]),
        {
            "kind": "cron",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
            "input": '{"report": "daily"}',
            "catch_up": "latest",
        },
        follow=True,
    )
    html = response.content.decode()
    schedule = Schedule.objects.get(agent=agent)
    assert schedule.input == {"report": "daily"}
    assert "Schedule added: every weekday at 09:00 Europe/Paris." in html

    card = schedules_card(html)
    assert "Every weekday at 09:00 Europe/Paris" in card
    assert "Times in America/New_York" in card
    runs = re.findall(r"<li><time datetime=\"([^\"]+)\">([^<]+)</time>", card)
    assert len(runs) == 5
    new_york = ZoneInfo("America/New_York")
    for iso, shown in runs:
        local = timezone.datetime.fromisoformat(iso).astimezone(new_york)
        assert shown == local.strftime("%-d %b %Y, %H:%M:%S")
        # 09:00 in Paris is 03:00 in New York, except in the weeks their changes differ.
        assert local.strftime("%M") == "00" and local.hour in (2, 3, 4)
    assert '{"report": "daily"}' in card


def test_a_time_in_a_daylight_saving_change_is_flagged_when_saved_not_refused(
    alice_client, make_agent
):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:schedule_new", args=[agent.uuid]),
        {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Paris", "catch_up": "latest"},
        follow=True,
    )
    html = response.content.decode()
    assert Schedule.objects.filter(agent=agent).exists()
    assert "Daylight saving: On " in html
    assert "the clocks in Europe/Paris go" in html


def test_a_bad_cron_expression_comes_back_next_to_the_field(alice_client, make_agent):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:schedule_new", args=[agent.uuid]),
        {"kind": "cron", "cron": "0 25 * * *", "timezone": "UTC", "catch_up": "latest"},
    )
    assert response.status_code == 422
    assert "Hour: 25 is out of range" in response.content.decode()
    assert not Schedule.objects.exists()


def test_a_one_off_time_is_read_in_my_zone(alice_client, make_agent):
    agent = make_agent()
    start = (timezone.now() + timedelta(days=2)).astimezone(ZoneInfo("America/New_York"))
    alice_client.post(
        reverse("agents:schedule_new", args=[agent.uuid]),
        {"kind": "once", "run_at": start.strftime("%Y-%m-%dT%H:%M"), "catch_up": "latest"},
    )
    schedule = Schedule.objects.get(agent=agent)
    assert schedule.run_at == start.replace(second=0, microsecond=0)


def test_editing_pausing_resuming_and_deleting_a_schedule(alice_client, make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    edit = reverse("agents:schedule_edit", args=[agent.uuid, schedule.uuid])
    assert 'value="300"' in alice_client.get(edit).content.decode()
    alice_client.post(edit, {"kind": "interval", "interval_seconds": "600", "catch_up": "none"})
    schedule.refresh_from_db()
    assert (schedule.interval_seconds, schedule.catch_up) == (600, "none")

    alice_client.post(reverse("agents:schedule_pause", args=[agent.uuid, schedule.uuid]))
    schedule.refresh_from_db()
    assert schedule.is_paused
    assert "No runs until it is resumed" in schedules_card(page_of(alice_client, agent))

    alice_client.post(reverse("agents:schedule_resume", args=[agent.uuid, schedule.uuid]))
    schedule.refresh_from_db()
    assert not schedule.is_paused and schedule.next_run_at > timezone.now()

    alice_client.post(reverse("agents:schedule_delete", args=[agent.uuid, schedule.uuid]))
    assert not Schedule.objects.exists()


def test_someone_elses_schedule_cannot_be_seen_or_changed(client, bob, make_agent):
    agent = make_agent()  # alice's
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    client.force_login(bob)
    assert client.get(reverse("agents:schedule_new", args=[agent.uuid])).status_code == 404
    for name in ("schedule_edit", "schedule_pause", "schedule_resume", "schedule_delete"):
        url = reverse(f"agents:{name}", args=[agent.uuid, schedule.uuid])
        assert client.post(url).status_code == 404
    schedule.refresh_from_db()
    assert not schedule.is_paused


def test_anonymous_visitors_are_sent_to_sign_in(client, make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    urls = [reverse("agents:schedule_new", args=[agent.uuid])] + [
        reverse(f"agents:{name}", args=[agent.uuid, schedule.uuid])
        for name in ("schedule_edit", "schedule_pause", "schedule_resume", "schedule_delete")
    ]
    for url in urls:
        response = client.post(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    assert Schedule.objects.filter(pk=schedule.pk, is_paused=False).exists()


def test_the_card_lists_the_last_scheduled_slots_run_or_skipped(alice_client, make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    now = timezone.now()
    execution = execution_request(
        agent=agent, trigger="schedule", schedule=schedule, scheduled_for=now - timedelta(minutes=5)
    )
    SkippedSlot.objects.create(
        schedule=schedule, slot_at=now, reason="the previous run was still running", at=now
    )
    schedule_pause(schedule=schedule)
    card = schedules_card(page_of(alice_client, agent))
    assert "Last scheduled slots" in card
    assert reverse("executions:detail", args=[execution.uuid]) in card
    assert "The previous run was still running" in card
    assert card.index("The previous run") < card.index(str(execution.uuid))  # newest first


def test_run_later_with_a_delay_queues_a_run_that_starts_at_that_time(alice_client, make_agent):
    agent = make_agent()
    before = timezone.now()
    response = alice_client.post(
        reverse("agents:run", args=[agent.uuid]),
        {"input": "", "delay": "10", "delay_unit": "minutes", "when": "later"},
        follow=True,
    )
    execution = Execution.objects.get()
    assert before + timedelta(minutes=10) <= execution.not_before
    assert execution.not_before <= timezone.now() + timedelta(minutes=10)
    html = response.content.decode()
    assert "Delayed until its start time" in html and 'id="delayed-until"' in html
    assert execution.wait_reason == "delayed" and execution.wait_until == execution.not_before


def test_run_later_at_a_time_reads_it_in_my_zone(alice_client, make_agent):
    agent = make_agent()
    start = (timezone.now() + timedelta(hours=3)).astimezone(ZoneInfo("America/New_York"))
    alice_client.post(
        reverse("agents:run", args=[agent.uuid]),
        {"input": "", "start_at": start.strftime("%Y-%m-%dT%H:%M"), "when": "later"},
    )
    assert Execution.objects.get().not_before == start.replace(second=0, microsecond=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Give a start time or a delay to run it later."),
        ({"start_at": "2020-01-01T09:00"}, "That time has passed."),
        ({"start_at": "2099-01-01T09:00", "delay": "5"}, "not both"),
        ({"delay": "600", "delay_unit": "days"}, "Select a valid choice"),
    ],
)
def test_run_later_needs_one_future_time(alice_client, make_agent, fields, message):
    agent = make_agent()
    response = alice_client.post(
        reverse("agents:run", args=[agent.uuid]), {"input": "", "when": "later", **fields}
    )
    assert message in response.content.decode()
    assert not Execution.objects.exists()


def test_run_now_ignores_the_start_later_fields(alice_client, make_agent):
    agent = make_agent()
    alice_client.post(
        reverse("agents:run", args=[agent.uuid]),
        {"input": "", "delay": "5", "delay_unit": "minutes", "when": "now"},
    )
    assert Execution.objects.get().not_before is None


def test_the_overlap_policy_is_set_on_the_agent_form(alice_client, make_agent):
    agent = make_agent()
    form_html = alice_client.get(reverse("agents:edit", args=[agent.uuid])).content.decode()
    assert "When a scheduled run comes while a run is still active" in form_html
    data = {
        "agent-name": agent.name,
        "agent-max_retries": 3,
        "agent-retry_backoff": 1,
        "agent-retry_backoff_max": 30,
        "agent-timeout": 30,
        "agent-priority": 5,
        "agent-queue": agent.queue,
        "agent-overlap_policy": "queue",
        "config-function": "demo.echo",
    }
    response = alice_client.post(reverse("agents:edit", args=[agent.uuid]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    agent.refresh_from_db()
    assert agent.overlap_policy == "queue"
    assert "it waits for the active run to finish" in schedules_card(
        page_of(alice_client, agent)
    ) or (not agent.schedules.exists())


def test_a_scheduled_execution_shows_its_slot(alice_client, make_agent):
    agent = make_agent()
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    slot = timezone.now().replace(microsecond=0)
    execution = execution_request(
        agent=agent, trigger="schedule", schedule=schedule, scheduled_for=slot
    )
    html = alice_client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    assert 'id="scheduled-slot"' in html and "Schedule" in html
    shown = slot.astimezone(ZoneInfo("America/New_York")).strftime("%-d %b %Y, %H:%M:%S")
    assert shown in html


def test_a_held_scheduled_run_says_what_it_waits_for(alice_client, make_agent):
    agent = make_agent(overlap_policy="queue")
    schedule = schedule_create(agent=agent, kind="interval", interval_seconds=300)
    now = timezone.now()
    execution = execution_request(
        agent=agent,
        trigger="schedule",
        schedule=schedule,
        scheduled_for=now,
        hold=True,
        at=now,
    )
    html = alice_client.get(reverse("executions:detail", args=[execution.uuid])).content.decode()
    assert "Waiting for the agent's earlier run to finish." in unescape(html)
    assert 'data-wait-reason="held"' in html


def preview(client, agent, **fields):
    response = client.get(reverse("agents:schedule_preview", args=[agent.uuid]), fields)
    assert response.status_code == 200
    return unescape(response.content.decode())


def test_the_schedule_form_previews_the_next_runs_while_typing(alice_client, make_agent):
    agent = make_agent()
    form = alice_client.get(reverse("agents:schedule_new", args=[agent.uuid])).content.decode()
    assert 'hx-trigger="load, input changed delay:400ms"' in form
    assert 'id="schedule-preview"' in form

    html = preview(alice_client, agent, kind="cron", cron="0 9 * * 1-5", timezone="Europe/Paris")
    assert "Every weekday at 09:00 Europe/Paris" in html
    shown = re.findall(r"<li><time datetime=\"([^\"]+)\">([^<]+)</time>", html)
    assert len(shown) == 5
    for iso, text in shown:
        at = timezone.datetime.fromisoformat(iso)
        assert text == at.astimezone(ZoneInfo("America/New_York")).strftime("%-d %b %Y, %H:%M:%S")
        paris = at.astimezone(ZoneInfo("Europe/Paris")).strftime("%-d %b %Y, %H:%M:%S")
        assert f"{paris} in Europe/Paris" in html
        assert paris.endswith("09:00:00")
    assert "Times in America/New_York, then in Europe/Paris." in html
    assert not Schedule.objects.exists()  # a preview saves nothing


def test_the_preview_says_what_is_wrong_or_missing(alice_client, make_agent):
    agent = make_agent()
    assert "Fill in when it runs" in preview(alice_client, agent, kind="cron", cron="")
    assert "not an IANA time zone" in preview(
        alice_client, agent, kind="cron", cron="0 9 * * *", timezone="Mars/Olympus"
    )
    assert "</li>" not in preview(alice_client, agent, kind="cron", cron="61 * * * *")
    html = preview(alice_client, agent, kind="interval", interval_seconds="600")
    assert len(re.findall("<li>", html)) == 5 and "in 10 min" in html


def test_the_schedules_card_shows_a_cron_schedules_runs_in_its_own_zone_too(
    alice_client, make_agent
):
    agent = make_agent()
    schedule_create(agent=agent, kind="cron", cron="30 7 * * *", timezone="Asia/Tokyo")
    card = schedules_card(page_of(alice_client, agent))
    assert card.count("in Asia/Tokyo</span>") == 5
    assert ", 07:30:00 in Asia/Tokyo" in card
