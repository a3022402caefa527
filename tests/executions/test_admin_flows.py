"""Flows in the execution admin: a flow's page lists its steps and links to each step's run, a
step's page links to its flow, the list filters flows' steps in or out, the retry and cancel
actions work on flows through the services, and the steps have a read-only list of their own."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions.flows import flow_start
from executions.models import Execution, FlowStep
from tests.conftest import failure, flow_started, step_ended

from .test_admin import CHANGELIST, listed, run_action

pytestmark = pytest.mark.django_db

STEPS = "/admin/executions/flowstep/"


def change_url(execution: Execution) -> str:
    return reverse("admin:executions_execution_change", args=[execution.pk])


@pytest.fixture
def nightly(make_agent, alice):
    """A flow: export -> in parallel (mail, chat) -> archive."""
    make_agent(alice, name="export")
    make_agent(alice, name="notify")
    make_agent(alice, name="archive")
    return make_agent(
        alice,
        name="nightly",
        kind="flow",
        config={
            "steps": [
                {"key": "export", "agent": "export", "input": {"day": "{{ input.day }}"}},
                {
                    "key": "tell",
                    "parallel": [
                        {"key": "mail", "agent": "notify"},
                        {"key": "chat", "agent": "notify"},
                    ],
                },
                {"key": "archive", "agent": "archive", "retry": {"max_retries": 0}},
            ],
            "timeout": 600,
        },
    )


def test_a_flow_s_page_lists_its_steps_with_a_link_to_each_step_s_run(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    export = step_ended(flow, "export", result={"rows": 12})
    mail = FlowStep.objects.get(flow=flow, key="mail").execution

    response = staff_client.get(change_url(flow))

    assert response.status_code == 200
    html = response.content.decode()
    inlines = response.context["inline_admin_formsets"]
    assert inlines[0].formset.model is FlowStep
    rows = [(s.key, s.status) for s in inlines[0].formset.get_queryset()]
    assert rows == [
        ("export", "succeeded"),
        ("tell", "running"),
        ("mail", "running"),
        ("chat", "running"),
        ("archive", "pending"),
    ]
    assert "2. mail (in tell)" in html
    assert f'<a href="{change_url(export)}">{export.uuid}</a> (succeeded)' in html
    assert f'<a href="{change_url(mail)}">{mail.uuid}</a> (queued)' in html
    assert "&quot;rows&quot;: 12" in html  # the step's result
    # The flow's own fields: its time limit, and the step it waits for.
    assert "Time limit ends" in html
    assert "Waiting for its current step" in html
    assert "Step 2 of 3: tell" in html


def test_a_step_s_page_links_to_its_flow(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    export = FlowStep.objects.get(flow=flow, key="export").execution

    response = staff_client.get(change_url(export))

    html = response.content.decode()
    assert f'<a href="{change_url(flow)}">{flow.uuid}</a> (running) of “nightly”' in html
    assert "export (step 1 of the flow)" in html
    # A step is no flow: no steps of its own.
    assert all(f.formset.model is not FlowStep for f in response.context["inline_admin_formsets"])


def test_other_executions_have_no_flow_section(staff_client, make_agent, make_execution):
    execution = make_execution(make_agent(), "succeeded")

    response = staff_client.get(change_url(execution))

    html = response.content.decode()
    assert len(response.context["inline_admin_formsets"]) == 3
    assert "Time limit ends" not in html and "step 1 of the flow" not in html


def test_a_flow_s_page_costs_the_same_queries_for_more_steps(staff_client, make_agent, alice):
    make_agent(alice, name="echo")

    def flow_of(n: int) -> Execution:
        steps = [{"key": f"s{i}", "agent": "echo"} for i in range(n)]
        agent = make_agent(alice, name=f"flow-{n}", kind="flow", config={"steps": steps})
        flow = flow_started(agent)
        for i in range(n - 1):
            step_ended(flow, f"s{i}", result={"i": i})
        return flow

    small, big = flow_of(2), flow_of(6)

    def queries(flow):
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(change_url(flow)).status_code == 200
        return len(captured)

    queries(small)  # the session and permissions warm up
    assert queries(big) == queries(small)


def test_a_reused_step_links_to_the_run_it_reused(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    export = step_ended(flow, "export", result={"rows": 12})
    staff_client.post(reverse("admin:executions_execution_cancel", args=[flow.pk]))
    staff_client.post(reverse("admin:executions_execution_retry", args=[flow.pk]))
    again = Execution.objects.get(retry_of=flow)
    assert flow_start(execution_id=again.pk, expected_attempt=0, worker="test-worker")

    html = staff_client.get(change_url(again)).content.decode()

    assert f'Reused: <a href="{change_url(export)}">{export.uuid}</a> (succeeded)' in html


# --- The list -------------------------------------------------------------------------------


def test_the_list_filters_flows_steps_by_trigger_and_in_or_out(
    staff_client, nightly, make_agent, make_execution
):
    flow = flow_started(nightly, {"day": "monday"})
    export = FlowStep.objects.get(flow=flow, key="export").execution
    other = make_execution(make_agent(), "succeeded")

    assert listed(staff_client, "?trigger__exact=flow") == [export.pk]
    assert listed(staff_client, "?flow_step=yes") == [export.pk]
    assert listed(staff_client, "?flow_step=no") == sorted([flow.pk, other.pk])
    html = staff_client.get(CHANGELIST).content.decode()
    assert "By flow step" in html


# --- Actions --------------------------------------------------------------------------------


def test_cancel_selected_stops_a_running_flow_and_its_steps(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    step_ended(flow, "export", result={})

    assert run_action(staff_client, "cancel_selected", [flow]) == ["1 cancelled."]

    flow.refresh_from_db()
    assert flow.status == "cancelled"
    steps = dict(FlowStep.objects.filter(flow=flow).values_list("key", "status"))
    assert steps == {
        "export": "succeeded",
        "tell": "cancelled",
        "mail": "cancelled",
        "chat": "cancelled",
        "archive": "skipped",
    }
    assert set(Execution.objects.filter(parent=flow).values_list("status", flat=True)) == {
        "succeeded",
        "cancelled",
    }


def test_retry_selected_retries_a_failed_flow_as_a_new_flow(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    step_ended(flow, "export", error=failure("auth", retryable=False))
    assert flow.status == "failed"

    assert run_action(staff_client, "retry_selected", [flow]) == ["1 retried."]

    new = Execution.objects.get(retry_of=flow)
    assert (new.agent, new.trigger, new.status) == (nightly, "retry", "queued")
    assert new.input == {"day": "monday"} and new.parent is None


# --- The steps' own list --------------------------------------------------------------------


def test_the_steps_list_is_read_only_and_finds_a_flow_s_steps(staff_client, nightly):
    flow = flow_started(nightly, {"day": "monday"})
    other = flow_started(nightly, {"day": "tuesday"})

    response = staff_client.get(STEPS, {"q": str(flow.uuid)})

    assert response.status_code == 200
    keys = sorted(s.key for s in response.context["cl"].result_list)
    assert keys == sorted(["export", "tell", "mail", "chat", "archive"])
    assert {s.flow_id for s in response.context["cl"].result_list} == {flow.pk}
    assert staff_client.get(STEPS, {"status__exact": "running"}).status_code == 200
    assert staff_client.get(STEPS + "add/").status_code == 403
    step = FlowStep.objects.get(flow=other, key="export")
    page = staff_client.get(reverse("admin:executions_flowstep_change", args=[step.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert "&quot;day&quot;: &quot;{{ input.day }}&quot;" in page.content.decode()
