"""The dashboard's workers panel: who answered ``inspect active`` within a second, what each is
running, and a clear message when nobody answered."""

from __future__ import annotations

import pytest
from celery import Celery
from django.template.loader import render_to_string
from django.urls import reverse

from executions.services import execution_cancel, execution_request
from ops import system, views
from tests.conftest import wait_for


def test_a_running_worker_and_the_execution_it_runs_are_listed(worker, staff_client, make_agent):
    agent = make_agent(config={"function": "demo.slow"})
    execution = execution_request(agent=agent, trigger="manual", input={"seconds": 6, "steps": 6})
    wait_for(execution, "running")

    response = staff_client.get(reverse("ops:workers"))

    html = response.content.decode()
    assert worker.nodename in html
    assert reverse("admin:executions_execution_change", args=[execution.pk]) in html
    assert agent.name in html
    assert "No worker answered" not in html
    execution_cancel(execution=execution, by="the test")  # leave the worker idle
    wait_for(execution, "cancelled")


def test_the_answer_is_reused_for_a_few_seconds(worker, staff_client):
    first = system.workers(refresh=True)
    assert worker.nodename in first.active
    # Asked again through an app no worker listens to, the cached answer comes back: no second
    # broadcast went out.
    again = system.workers(refresh=True, app=_nobody_listens())
    assert again.active.keys() == first.active.keys()
    # The dashboard page itself never waits for the broadcast: it uses the cache or a fragment.
    assert "Asking the workers" not in staff_client.get("/ops/").content.decode()


def _nobody_listens() -> Celery:
    """Conveyor's broker, but a control exchange no worker listens on."""
    app = Celery("ops-nobody", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.control_exchange = "ops-nobody-listens"
    return app


@pytest.mark.django_db
def test_no_worker_answering_is_said_plainly(staff_client):
    result = system.workers(refresh=True, app=_nobody_listens())

    assert result.online == 0 and result.error == ""
    html = render_to_string("ops/_workers.html", views._workers_context(result))
    assert "No worker answered" in html


@pytest.mark.django_db
def test_the_dashboard_loads_the_panel_after_the_page_when_nothing_is_cached(staff_client):
    html = staff_client.get("/ops/").content.decode()
    assert f'hx-get="{reverse("ops:workers")}"' in html
    assert "Asking the workers" in html
