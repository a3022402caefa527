"""The agent admin writes and deletes through agents.services: agent_create, agent_update and
agent_delete, so a rule of theirs holds in the admin too."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse

import agents.admin
import agents.services
from agents.models import Agent
from executions.models import Execution

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:agents_agent_changelist")
ADD = reverse("admin:agents_agent_add")


def change_url(agent) -> str:
    return reverse("admin:agents_agent_change", args=[agent.pk])


def delete_url(agent) -> str:
    return reverse("admin:agents_agent_delete", args=[agent.pk])


def post_form(client, url, **changes):
    """Post the admin's form for ``url`` as shown, with ``changes``."""
    form = client.get(url).context["adminform"].form
    shown = {name: form[name].value() for name in form.fields}
    data = {name: value for name, value in shown.items() if value not in (None, False, [])}
    data.update(
        {
            "kind": "function",
            "config": '{"function": "demo.echo"}',
            "retry_on": '["timeout"]',
            "schedules-TOTAL_FORMS": 0,
            "schedules-INITIAL_FORMS": 0,
            **changes,
        }
    )
    return client.post(url, data)


@pytest.fixture
def no_tmp_names(monkeypatch):
    """A rule only the services hold (the admin form's own validation does not know it)."""
    validate = agents.services.agent_validate

    def strict(*, agent):
        validate(agent=agent)
        if agent.name.startswith("tmp-"):
            raise ValidationError({"name": ["Names starting with “tmp-” are reserved."]})

    monkeypatch.setattr(agents.services, "agent_validate", strict)


@pytest.fixture
def calls(monkeypatch):
    """Records the admin's calls of agent_create and agent_update (which still run)."""
    seen = []
    for name in ("agent_create", "agent_update"):
        service = getattr(agents.admin, name)

        def record(*, _name=name, _service=service, **kwargs):
            seen.append((_name, kwargs))
            return _service(**kwargs)

        monkeypatch.setattr(agents.admin, name, record)
    return seen


# --- Creating and changing ---------------------------------------------------------------------


def test_an_agent_added_in_the_admin_is_created_by_agent_create(staff_client, alice, calls):
    response = post_form(
        staff_client, ADD, owner=alice.pk, name="nightly-report", secrets_add="token=s3cret"
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = Agent.objects.get(name="nightly-report")
    assert [name for name, _ in calls] == ["agent_create"]
    assert calls[0][1]["owner"] == alice and calls[0][1]["secrets"] == {"token": "s3cret"}
    assert agent.owner == alice and agent.secrets.reveal() == {"token": "s3cret"}
    assert response["Location"] == CHANGELIST
    entry = LogEntry.objects.get(action_flag=ADDITION)
    assert entry.object_id == str(agent.pk)


def test_a_change_in_the_admin_is_saved_by_agent_update_which_merges_the_secrets(
    staff_client, make_agent, calls
):
    agent = make_agent(secrets={"old": "v1"})

    response = post_form(
        staff_client,
        change_url(agent),
        owner=agent.owner_id,
        description="Now with a new key",
        secrets_add="new=v2",
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert [name for name, _ in calls] == ["agent_update"]
    assert calls[0][1]["secrets"] == {"new": "v2"}
    agent.refresh_from_db()
    assert agent.description == "Now with a new key"
    assert agent.secrets.reveal() == {"old": "v1", "new": "v2"}


def test_a_rule_of_the_services_holds_when_adding_in_the_admin(staff_client, alice, no_tmp_names):
    response = post_form(staff_client, ADD, owner=alice.pk, name="tmp-report")

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == [
        "Names starting with “tmp-” are reserved."
    ]
    assert not Agent.objects.exists()
    assert not LogEntry.objects.exists()


def test_a_rule_of_the_services_holds_when_changing_in_the_admin(
    staff_client, make_agent, no_tmp_names
):
    agent = make_agent(name="report")

    response = post_form(staff_client, change_url(agent), owner=agent.owner_id, name="tmp-report")

    assert response.status_code == 200
    assert "Names starting with “tmp-” are reserved." in response.content.decode()
    agent.refresh_from_db()
    assert agent.name == "report"
    assert not LogEntry.objects.exists()


# --- Deleting ----------------------------------------------------------------------------------


def test_an_agent_with_finished_runs_is_deleted_with_them(
    staff_client, make_agent, make_execution, make_schedule
):
    agent = make_agent(name="old-sync")
    make_execution(agent, "succeeded")
    make_execution(agent, "failed")
    make_schedule(agent)

    page = staff_client.get(delete_url(agent)).content.decode()
    assert "2 executions, with their attempts, status changes and logs" in page
    assert "1 schedule" in page

    response = staff_client.post(delete_url(agent), {"post": "yes"}, follow=True)

    assert [m.message for m in response.context["messages"]] == [
        "The agent “old-sync” was deleted successfully."
    ]
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not Execution.objects.exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(agent.pk)).exists()


def test_an_agent_with_a_run_in_progress_is_kept_and_the_admin_says_why(
    staff_client, make_agent, make_execution
):
    agent = make_agent(name="busy-sync")
    make_execution(agent, "running")
    assert "Runs in progress: 1." in staff_client.get(delete_url(agent)).content.decode()

    response = staff_client.post(delete_url(agent), {"post": "yes"}, follow=True)

    assert response.redirect_chain[-1][0] == change_url(agent)
    assert [m.message for m in response.context["messages"]] == [
        "“busy-sync” has 1 run in progress (queued, running or retrying): cancel them, or "
        "wait for them to finish, before deleting it."
    ]
    assert Agent.objects.filter(pk=agent.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_the_delete_action_reports_what_it_deleted_and_what_it_kept(
    staff_client, make_agent, make_execution
):
    idle = [make_agent(), make_agent()]
    make_execution(idle[0], "succeeded")
    busy = make_agent()
    make_execution(busy, "queued")
    selected = {"action": "delete_selected", ACTION_CHECKBOX_NAME: [a.pk for a in [*idle, busy]]}

    confirm = staff_client.post(CHANGELIST, selected)
    assert confirm.status_code == 200
    assert "Runs in progress: 1." in confirm.content.decode()
    assert Agent.objects.count() == 3

    response = staff_client.post(CHANGELIST, {**selected, "post": "yes"}, follow=True)

    assert [m.message for m in response.context["messages"]] == [
        "2 deleted. 1 skipped: runs in progress (1)."
    ]
    assert list(Agent.objects.all()) == [busy]
    assert LogEntry.objects.filter(action_flag=DELETION).count() == 2
