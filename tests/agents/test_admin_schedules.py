"""Operators find schedules in the admin and pause or resume them through the services."""

import pytest
from django.urls import reverse

from agents.models import Schedule
from agents.schedule_services import schedule_create, schedule_pause

pytestmark = pytest.mark.django_db


def test_operators_pause_and_resume_schedules_with_a_report(client, staff, make_agent):
    agent = make_agent()
    running = schedule_create(agent=agent, kind="interval", interval_seconds=60)
    paused = schedule_create(agent=agent, kind="interval", interval_seconds=120)
    schedule_pause(schedule=paused)
    client.force_login(staff)
    url = reverse("admin:agents_schedule_changelist")
    assert client.get(url).status_code == 200

    response = client.post(
        url, {"action": "pause_selected", "_selected_action": [running.pk, paused.pk]}, follow=True
    )

    text = response.content.decode()
    assert "1 paused." in text and "1 skipped: already paused (1)" in text
    assert Schedule.objects.filter(is_paused=True).count() == 2
    client.post(url, {"action": "resume_selected", "_selected_action": [running.pk]})
    running.refresh_from_db()
    assert not running.is_paused and running.next_run_at is not None
