"""The execution admin: read-only pages, filters and search that stay fast on big tables, and
retry/cancel actions that go through the services and explain every row they skip."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.services import agent_pause
from executions.admin import EstimatedCountPaginator
from executions.models import Execution, ExecutionLog

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/executions/execution/"


def run_action(client, action, executions, query="", **extra):
    """Submit an admin action on the changelist; returns the messages shown afterwards."""
    data = {"action": action, ACTION_CHECKBOX_NAME: [e.pk for e in executions], "index": 0}
    response = client.post(CHANGELIST + query, {**data, **extra}, follow=True)
    assert response.status_code == 200
    return [m.message for m in response.context["messages"]]


def listed(client, query="") -> list[int]:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return sorted(e.pk for e in response.context["cl"].result_list)


# --- Retry -------------------------------------------------------------------------------------


def test_retry_selected_retries_failed_ones_and_says_why_it_skipped_the_others(
    staff_client, make_agent, make_execution, django_capture_on_commit_callbacks
):
    agent = make_agent()
    failed = [make_execution(agent, "failed") for _ in range(3)]
    succeeded = make_execution(agent, "succeeded")
    running = make_execution(agent, "running")

    with django_capture_on_commit_callbacks() as callbacks:
        messages = run_action(staff_client, "retry_selected", [*failed, succeeded, running])

    assert messages == ["3 retried. 2 skipped: not failed or cancelled (2)."]
    retries = Execution.objects.filter(trigger="retry")
    assert sorted(r.retry_of_id for r in retries) == sorted(e.pk for e in failed)
    assert all(r.status == "queued" and r.input == r.retry_of.input for r in retries)
    assert len(callbacks) == 3  # each new execution is handed to a worker after its commit
    # The originals are never changed.
    assert {e.status for e in Execution.objects.filter(pk__in=[f.pk for f in failed])} == {"failed"}


def test_retrying_twice_does_not_replay_a_dead_letter_twice(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    failed = make_execution(agent, "failed")
    assert run_action(staff_client, "retry_selected", [failed]) == ["1 retried."]
    assert run_action(staff_client, "retry_selected", [failed]) == [
        "0 retried. 1 skipped: already retried (1)."
    ]
    assert Execution.objects.filter(retry_of=failed).count() == 1


def test_a_paused_agent_s_executions_are_skipped_with_the_reason(
    staff_client, make_agent, make_execution
):
    paused = make_agent(name="paused one")
    execution = make_execution(paused, "failed")
    agent_pause(agent=paused)
    assert run_action(staff_client, "retry_selected", [execution]) == [
        "0 retried. 1 skipped: agent paused (1)."
    ]


def test_dead_letters_are_the_failed_executions_nobody_retried_yet(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    waiting = [make_execution(agent, "failed") for _ in range(2)]
    handled = make_execution(agent, "failed")
    make_execution(agent, "succeeded")
    run_action(staff_client, "retry_selected", [handled])

    query = "?status__exact=failed&retried=no"
    assert listed(staff_client, query) == sorted(e.pk for e in waiting)
    # The changelist offers the link, and "select all" + retry replays every one of them.
    assert 'href="?status__exact=failed&amp;retried=no"' in (
        staff_client.get(CHANGELIST).content.decode()
    )
    messages = run_action(staff_client, "retry_selected", waiting[:1], select_across=1, query=query)
    assert messages == ["2 retried."]
    assert listed(staff_client, query) == []


def test_a_bulk_action_handles_at_most_its_limit_and_says_how_many_are_left(
    staff_client, make_agent, make_execution, monkeypatch
):
    monkeypatch.setattr("executions.admin.BULK_LIMIT", 2)
    agent = make_agent()
    failed = [make_execution(agent, "failed") for _ in range(3)]
    messages = run_action(staff_client, "retry_selected", failed)
    assert messages == [
        "2 retried. 1 skipped: beyond the 2 handled at once; run the action again (1)."
    ]


# --- Cancel ------------------------------------------------------------------------------------


def test_cancel_selected_cancels_active_ones_and_skips_finished_ones(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    queued = make_execution(agent, "queued")
    retrying = make_execution(agent, "retrying", attempt=1)
    done = make_execution(agent, "succeeded")
    failed = make_execution(agent, "failed")

    messages = run_action(staff_client, "cancel_selected", [queued, retrying, done, failed])

    assert messages == ["2 cancelled. 2 skipped: already finished (2)."]
    queued.refresh_from_db()
    retrying.refresh_from_db()
    assert queued.status == retrying.status == "cancelled"
    assert queued.events.last().reason == "Cancelled by sam"
    done.refresh_from_db()
    assert done.status == "succeeded"


def test_a_staff_member_without_the_change_permission_gets_no_actions(
    client, django_user_model, make_agent, make_execution
):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    execution = make_execution(make_agent(), "failed")

    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "retry_selected" not in response.content.decode()
    client.post(
        CHANGELIST, {"action": "retry_selected", ACTION_CHECKBOX_NAME: [execution.pk], "index": 0}
    )
    assert not Execution.objects.filter(retry_of=execution).exists()


# --- List, filters, search ---------------------------------------------------------------------


def test_the_list_shows_a_coloured_badge_and_the_columns_operators_need(
    staff_client, make_agent, make_execution
):
    agent = make_agent(name="nightly-report")
    make_execution(agent, "failed", error_category="timeout", attempt=3, seconds=12)
    html = staff_client.get(CHANGELIST).content.decode()
    assert 'class="conveyor-badge conveyor-badge-failed" data-status="failed">Failed<' in html
    assert "nightly-report" in html and "alice" in html
    assert "3/4" in html and "12 s" in html
    assert "ops/admin.css" in html


def test_filters_narrow_the_list(staff_client, make_agent, make_execution):
    a = make_agent(name="a", queue="ops-fast")
    b = make_agent(name="b")
    e1 = make_execution(a, "failed", error_category="network", trigger="webhook")
    e2 = make_execution(b, "failed", error_category="auth")
    e3 = make_execution(b, "succeeded", ago=timedelta(days=40), seconds=90)

    assert listed(staff_client, "?status__exact=failed") == sorted([e1.pk, e2.pk])
    assert listed(staff_client, "?error_category__exact=network") == [e1.pk]
    assert listed(staff_client, "?trigger__exact=webhook") == [e1.pk]
    assert listed(staff_client, "?agent__queue__exact=ops-fast") == [e1.pk]
    assert listed(staff_client, f"?agent__id__exact={b.pk}") == sorted([e2.pk, e3.pk])
    since = urlencode({"created_at__gte": (e3.created_at + timedelta(days=1)).isoformat()})
    assert listed(staff_client, f"?{since}") == sorted([e1.pk, e2.pk])
    assert listed(staff_client, "?slower_than=60") == [e3.pk]


def test_search_finds_an_execution_by_uuid_agent_name_or_owner(
    staff_client, make_agent, make_execution, bob
):
    alice_s = make_execution(make_agent(name="invoice-sync"), "succeeded")
    bob_s = make_execution(make_agent(bob, name="crawler"), "failed")

    assert listed(staff_client, f"?q={bob_s.uuid}") == [bob_s.pk]
    assert listed(staff_client, "?q=INVOICE") == [alice_s.pk]
    assert listed(staff_client, "?q=bob") == [bob_s.pk]
    assert listed(staff_client, "?q=nothing-like-this") == []


def test_the_list_costs_the_same_queries_for_many_rows(staff_client, make_agent, make_execution):
    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(CHANGELIST + "?status__exact=failed").status_code == 200
        return len(ctx.captured_queries)

    make_execution(make_agent(), "failed")
    few = count()
    for _ in range(5):
        agent = make_agent()
        for _ in range(4):
            make_execution(agent, "failed")
    assert count() == few


# --- Counting ----------------------------------------------------------------------------------


def test_the_list_counts_exactly_on_small_tables_and_when_filtered(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    for _ in range(3):
        make_execution(agent, "succeeded")
    response = staff_client.get(CHANGELIST)
    assert response.context["cl"].result_count == 3
    assert not response.context["cl"].paginator.is_estimate
    assert "3 executions" in response.content.decode()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_class estimates: Postgres only")
def test_on_postgres_the_unfiltered_list_reads_the_planner_s_estimate(
    staff_client, make_agent, make_execution, monkeypatch
):
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_above", 0)
    agent = make_agent()
    for _ in range(5):
        make_execution(agent, "succeeded")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE executions_execution")
    for _ in range(2):  # rows the estimate does not know about yet
        make_execution(agent, "failed")

    unfiltered = staff_client.get(CHANGELIST)
    assert unfiltered.context["cl"].result_count == 5
    assert "about 5 executions" in unfiltered.content.decode()
    filtered = staff_client.get(CHANGELIST + "?status__exact=failed")
    assert filtered.context["cl"].result_count == 2
    assert not filtered.context["cl"].paginator.is_estimate


def test_a_filtered_list_stops_counting_at_its_limit_and_says_so(
    staff_client, make_agent, make_execution, monkeypatch
):
    monkeypatch.setattr(EstimatedCountPaginator, "count_up_to", 3)
    agent = make_agent()
    for _ in range(3):
        make_execution(agent, "failed")
    exactly = staff_client.get(CHANGELIST + "?status__exact=failed&retried=no")
    assert exactly.context["cl"].result_count == 3
    assert "3 executions" in exactly.content.decode()
    assert not exactly.context["cl"].paginator.is_capped

    make_execution(agent, "failed")
    capped = staff_client.get(CHANGELIST + "?status__exact=failed&retried=no")
    assert capped.context["cl"].result_count == 3
    assert capped.context["cl"].paginator.is_capped
    page = capped.content.decode()
    assert "more than 3 executions" in page
    assert "Narrow the filters to see the rest." in page


# --- Detail ------------------------------------------------------------------------------------


def test_the_detail_page_shows_attempts_events_logs_and_the_traceback(
    staff_client, make_agent, make_execution
):
    execution = make_execution(
        make_agent(),
        "failed",
        attempt=2,
        detail='Traceback (most recent call last):\n  File "x.py"\nValueError: <boom>',
    )
    ExecutionLog.objects.create(
        execution=execution, attempt=2, at=execution.created_at, message="calling the service"
    )

    response = staff_client.get(reverse("admin:executions_execution_change", args=[execution.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(
        r'<pre class="conveyor-traceback">Traceback.*ValueError: &lt;boom&gt;</pre>', html, re.S
    )
    assert "calling the service" in html
    assert len(response.context["inline_admin_formsets"]) == 3
    attempts, events, logs = (
        len(list(f.formset.get_queryset())) for f in response.context["inline_admin_formsets"]
    )
    # Events: queued, running, retrying, running, failed; logs: one per failed attempt, and ours.
    assert (attempts, events, logs) == (2, 5, 3)
    # Read-only: no save button, and a POST changes nothing.
    assert 'name="_save"' not in html
    assert (
        staff_client.post(response.request["PATH_INFO"], {"status": "succeeded"}).status_code == 403
    )


def test_the_detail_page_shows_only_the_latest_log_lines(
    staff_client, make_agent, make_execution, monkeypatch
):
    monkeypatch.setattr("executions.admin.LOG_LINES", 3)
    execution = make_execution(make_agent(), "succeeded")
    ExecutionLog.objects.bulk_create(
        ExecutionLog(execution=execution, at=execution.created_at, message=f"line {i}")
        for i in range(10)
    )
    response = staff_client.get(reverse("admin:executions_execution_change", args=[execution.pk]))
    html = response.content.decode()
    assert "line 9" in html and "line 7" in html and "line 6" not in html


def test_the_detail_page_retries_a_failed_execution_through_the_service(
    staff_client, make_agent, make_execution
):
    failed = make_execution(make_agent(), "failed")
    page = staff_client.get(reverse("admin:executions_execution_change", args=[failed.pk]))
    retry_url = reverse("admin:executions_execution_retry", args=[failed.pk])
    assert f'action="{retry_url}"' in page.content.decode()
    assert "executions_execution_cancel" not in page.content.decode()

    assert staff_client.get(retry_url).status_code == 403  # only the button's POST
    response = staff_client.post(retry_url)

    new = Execution.objects.get(retry_of=failed)
    assert response["Location"] == reverse("admin:executions_execution_change", args=[new.pk])
    assert new.status == "queued" and new.trigger == "retry"
    assert new.events.get().reason == f"Manual retry of {failed.uuid} by sam"


def test_the_detail_page_cancels_a_queued_execution(staff_client, make_agent, make_execution):
    queued = make_execution(make_agent(), "queued")
    cancel_url = reverse("admin:executions_execution_cancel", args=[queued.pk])
    page = staff_client.get(reverse("admin:executions_execution_change", args=[queued.pk]))
    assert f'action="{cancel_url}"' in page.content.decode()

    staff_client.post(cancel_url)
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    # A second press explains instead of failing.
    response = staff_client.post(cancel_url, follow=True)
    assert "already finished" in response.content.decode()


def test_a_viewer_without_the_change_permission_cannot_retry_from_the_detail_page(
    client, django_user_model, make_agent, make_execution
):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(viewer)
    failed = make_execution(make_agent(), "failed")
    page = client.get(reverse("admin:executions_execution_change", args=[failed.pk]))
    assert "Retry</button>" not in page.content.decode()
    assert (
        client.post(reverse("admin:executions_execution_retry", args=[failed.pk])).status_code
        == 403
    )
    assert not Execution.objects.filter(retry_of=failed).exists()
