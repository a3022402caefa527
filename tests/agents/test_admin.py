"""The agent admin: the list operators scan, pause and resume in bulk, write-only secrets; and the
Celery beat and results admins still work beside it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent, Schedule
from agents.secrets import Secrets

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/agents/agent/"


def run_action(client, action, agents):
    response = client.post(
        CHANGELIST,
        {"action": action, ACTION_CHECKBOX_NAME: [a.pk for a in agents], "index": 0},
        follow=True,
    )
    assert response.status_code == 200
    return [m.message for m in response.context["messages"]]


def test_pause_selected_reports_what_changed_and_what_was_already_paused(staff_client, make_agent):
    running = [make_agent(), make_agent()]
    paused = make_agent(is_paused=True)

    assert run_action(staff_client, "pause_selected", [*running, paused]) == [
        "2 paused. 1 skipped: already paused (1)."
    ]
    assert Agent.objects.filter(is_paused=True).count() == 3


def test_resume_selected_reports_the_ones_that_were_not_paused(staff_client, make_agent):
    paused = make_agent(is_paused=True)
    active = make_agent()
    assert run_action(staff_client, "resume_selected", [paused, active]) == [
        "1 resumed. 1 skipped: not paused (1)."
    ]
    paused.refresh_from_db()
    assert not paused.is_paused


def test_the_list_shows_owner_kind_schedules_and_last_run(
    staff_client, make_agent, make_execution, bob
):
    agent = make_agent(bob, name="hourly-sync")
    soon = timezone.now() + timedelta(minutes=7)
    Schedule.objects.create(agent=agent, kind="interval", interval_seconds=3600, next_run_at=soon)
    Schedule.objects.create(agent=agent, kind="interval", interval_seconds=60, is_paused=True)
    make_execution(agent, "succeeded", ago=timedelta(hours=2))
    make_execution(agent, "failed", ago=timedelta(minutes=1))

    html = staff_client.get(CHANGELIST).content.decode()

    assert "hourly-sync" in html and ">bob<" in html and "function" in html
    assert f"1 active · next {soon:%Y-%m-%d %H:%M} UTC" in html
    assert 'class="conveyor-badge conveyor-badge-failed">Failed<' in html


def test_search_and_filters(staff_client, make_agent, bob):
    mine = make_agent(name="mailer")
    theirs = make_agent(bob, name="crawler", is_paused=True)

    def names(query):
        return sorted(
            a.name for a in staff_client.get(CHANGELIST + query).context["cl"].result_list
        )

    assert names("?q=mail") == ["mailer"]
    assert names("?q=bob") == ["crawler"]
    assert names(f"?q={theirs.uuid}") == ["crawler"]
    assert names("?is_paused__exact=1") == ["crawler"]
    assert names("?kind=function") == sorted([mine.name, theirs.name])


def test_secrets_are_never_shown_only_their_names(staff_client, make_agent):
    agent = make_agent(secrets={"api_token": "tok-very-secret-1"})
    agent.webhook_secrets = Secrets({"current": "whsec_alsoverysecret"})
    agent.save()

    html = staff_client.get(reverse("admin:agents_agent_change", args=[agent.pk])).content.decode()

    assert "tok-very-secret-1" not in html and "whsec_alsoverysecret" not in html
    assert "set: api_token" in html
    assert "set: current" in html
    assert 'name="secrets"' not in html and 'name="webhook_secrets"' not in html


def test_a_secret_can_be_added_and_removed_without_ever_being_shown(staff_client, make_agent):
    agent = make_agent(secrets={"old": "v1"})
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    form = staff_client.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if name in form.fields and value is not None
    }
    data.update(
        {
            "owner": agent.owner_id,
            "config": '{"function": "demo.echo"}',
            "retry_on": '["timeout"]',
            "secrets_add": "new_token=abc123",
            "secrets_remove": ["old"],
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
        }
    )
    data = {k: v for k, v in data.items() if not isinstance(v, bool) or v}

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert agent.secrets.reveal() == {"new_token": "abc123"}
    assert "abc123" not in staff_client.get(url).content.decode()


def test_a_config_the_kind_rejects_is_an_error_on_the_form(staff_client, make_agent):
    agent = make_agent()
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    form = staff_client.get(url).context["adminform"].form
    data = {n: v for n, v in form.initial.items() if n in form.fields and v not in (None, False)}
    data.update(
        {
            "config": '{"function": "no.such.function"}',
            "retry_on": "[]",
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
        }
    )
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "config" in response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert agent.config == {"function": "demo.echo"}


@pytest.mark.parametrize(
    "model",
    [
        "django_celery_beat/periodictask",
        "django_celery_beat/crontabschedule",
        "django_celery_beat/intervalschedule",
        "django_celery_beat/clockedschedule",
        "django_celery_beat/solarschedule",
        "django_celery_results/taskresult",
        "django_celery_results/groupresult",
    ],
)
def test_the_celery_beat_and_results_admins_still_load(staff_client, model):
    assert staff_client.get(f"/admin/{model}/").status_code == 200
    assert staff_client.get(f"/admin/{model}/add/").status_code in (200, 403)


def test_a_periodic_task_can_still_be_created_in_the_beat_admin(staff_client):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every = IntervalSchedule.objects.create(every=10, period="seconds")
    response = staff_client.post(
        "/admin/django_celery_beat/periodictask/add/",
        {
            "name": "ops-probe",
            "regtask": "executions.enforce_cancel",
            "task": "",
            "interval": every.pk,
            "args": "[]",
            "kwargs": "{}",
            "enabled": "on",
            "queue": "",
            "exchange": "",
            "routing_key": "",
            "headers": "{}",
            "priority": "",
            "expires": "",
            "expire_seconds": "",
            "description": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert PeriodicTask.objects.filter(name="ops-probe").exists()


def test_the_admin_applies_the_installation_limits_like_the_pages(client, staff, make_agent):
    from django.test import override_settings
    from django.urls import reverse

    agent = make_agent()
    client.force_login(staff)
    url = reverse("admin:agents_agent_change", args=[agent.pk])
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "retry_on"}
    data.update(
        {
            "owner": agent.owner_id,
            "config": '{"function": "demo.echo"}',
            "retry_on": '["network"]',
            "timeout": "500",
        }
    )
    with override_settings(CONVEYOR_MAX_TIMEOUT=60):
        response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert "At most 60 seconds on this installation." in response.content.decode()
    agent.refresh_from_db()
    assert agent.timeout == 30
