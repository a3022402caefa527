"""The operations dashboard: who may see it, what it counts, where each figure leads, and that it
costs the same number of queries whatever the number of executions."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions.services import execution_claim
from ops import selectors
from ops.rollups import roll_up

pytestmark = pytest.mark.django_db

DASHBOARD = "/ops/"


def links(html: str) -> list[str]:
    return [m.replace("&amp;", "&") for m in re.findall(r'href="([^"]+)"', html)]


def admin_link(html: str, **expected) -> str:
    """The first admin changelist link whose query has exactly ``expected`` plus created_at."""
    for href in links(html):
        parts = urlsplit(href)
        if parts.path != reverse("admin:executions_execution_changelist"):
            continue
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        query.pop("created_at__gte", None)
        if query == expected:
            return href
    raise AssertionError(f"no admin link with {expected} in the page")


# --- Access ---------------------------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_the_admin_login(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_a_signed_in_user_who_is_not_staff_gets_a_plain_403_page(alice_client):
    response = alice_client.get(DASHBOARD)
    assert response.status_code == 403
    html = response.content.decode()
    assert "This page is for operators." in html
    assert "Go to your home page" in html and 'name="password"' not in html


def test_the_workers_panel_is_staff_only_too(alice_client, client):
    assert alice_client.get(reverse("ops:workers")).status_code == 403
    client.logout()
    assert client.get(reverse("ops:workers")).status_code == 302


def test_the_admin_links_to_the_dashboard(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{DASHBOARD}"' in html


# --- Figures ----------------------------------------------------------------------------------


def test_it_counts_the_window_s_executions_by_outcome(staff_client, make_agent, make_execution):
    agent = make_agent()
    for _ in range(3):
        make_execution(agent, "succeeded")
    make_execution(agent, "failed", error_category="timeout")
    make_execution(agent, "cancelled")
    make_execution(agent, "running")
    make_execution(agent, "succeeded", ago=timedelta(days=2))  # outside 24 hours

    response = staff_client.get(DASHBOARD + "?window=24h")

    ov = response.context["ov"]
    assert (ov.started, ov.succeeded, ov.failed, ov.cancelled, ov.active) == (6, 3, 1, 1, 1)
    assert ov.success_rate == pytest.approx(0.75)
    week = staff_client.get(DASHBOARD + "?window=7d").context["ov"]
    assert week.started == 7


def test_each_figure_links_to_the_admin_list_that_explains_it(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    make_execution(agent, "failed", error_category="timeout")
    make_execution(agent, "failed", error_category="timeout")
    make_execution(agent, "succeeded")
    html = staff_client.get(DASHBOARD + "?window=1h").content.decode()

    failed_url = admin_link(html, status__exact="failed")
    since = parse_qs(urlsplit(failed_url).query)["created_at__gte"][0]
    assert timezone.now() - timedelta(hours=1, minutes=1) < _parse(since) <= timezone.now()
    # The link opens the admin list with exactly those executions.
    listed = staff_client.get(failed_url).context["cl"].result_count
    assert listed == 2
    by_category = admin_link(html, status__exact="failed", error_category__exact="timeout")
    assert staff_client.get(by_category).context["cl"].result_count == 2
    by_agent = admin_link(html, agent__id__exact=str(agent.pk))
    assert staff_client.get(by_agent).context["cl"].result_count == 3


def _parse(value):
    from django.utils.dateparse import parse_datetime

    return parse_datetime(value)


def test_durations_are_the_median_and_95th_percentile_of_successful_runs(
    staff_client, make_agent, make_execution
):
    fast, slow = make_agent(name="fast"), make_agent(name="slow")
    for seconds in range(1, 101):  # 1 s ... 100 s
        make_execution(fast, "succeeded", seconds=seconds)
    for seconds in (200, 400):
        make_execution(slow, "succeeded", seconds=seconds)
    make_execution(slow, "failed", seconds=9999)  # failures do not count in durations

    context = staff_client.get(DASHBOARD).context
    ov = context["ov"]
    # Linear interpolation between closest ranks, as Postgres' percentile_cont does.
    assert ov.p50 == pytest.approx(51.5)
    assert ov.p95 == pytest.approx(96.95)
    per_agent = {row["a"].name: row["a"] for row in context["busiest"]}
    assert per_agent["fast"].p50 == pytest.approx(50.5)
    assert per_agent["fast"].p95 == pytest.approx(95.05)
    assert per_agent["slow"].p50 == pytest.approx(300)
    # The p95 figure opens the runs at least that slow.
    p95_url = context["links"]["p95"]
    assert staff_client.get(p95_url).context["cl"].result_count == 6


def test_failures_are_grouped_by_category_and_the_agents_that_fail_most_come_first(
    staff_client, make_agent, make_execution
):
    good, bad, worse = make_agent(name="good"), make_agent(name="bad"), make_agent(name="worse")
    make_execution(good, "succeeded")
    make_execution(bad, "failed", error_category="network")
    make_execution(bad, "succeeded")
    for _ in range(3):
        make_execution(worse, "failed", error_category="auth")

    context = staff_client.get(DASHBOARD).context

    assert [(f["label"], f["count"]) for f in context["failures"]] == [
        ("Not authorised", 3),
        ("Network problem", 1),
    ]
    assert [(row["a"].name, row["a"].failed) for row in context["failing"]] == [
        ("worse", 3),
        ("bad", 1),
    ]


def test_it_shows_retries_scheduled_now(staff_client, make_agent, make_execution):
    agent = make_agent(retry_backoff=180, retry_backoff_max=600)
    make_execution(agent, "retrying", at=timezone.now(), seconds=0)  # retried in 3 minutes
    make_execution(agent, "retrying", attempt=2, ago=timedelta(days=30))
    response = staff_client.get(DASHBOARD)
    assert response.context["d"].live.retrying == 2
    assert "2 retries scheduled; the next one" in response.content.decode()


def test_the_throughput_chart_has_a_bar_per_minute_or_hour_and_links_per_slice(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    now = timezone.now()
    mid_minute = now.replace(second=30, microsecond=0) - timedelta(minutes=10)
    make_execution(agent, "succeeded", at=mid_minute)
    make_execution(agent, "failed", at=mid_minute)
    make_execution(agent, "succeeded", ago=timedelta(minutes=3))

    hour = staff_client.get(DASHBOARD + "?window=1h")
    buckets = hour.context["d"].throughput
    assert len(buckets) == 60
    assert sum(b.succeeded for b in buckets) == 2 and sum(b.failed for b in buckets) == 1
    svg = str(hour.context["chart"])
    assert svg.startswith("<svg") and 'class="succeeded"' in svg and 'class="failed"' in svg
    assert svg.count("<a href=") == 60
    # A slice's link opens that minute's executions.
    busy = next(b for b in buckets if b.failed)
    link = next(
        href
        for href in links(svg)
        if f"created_at__gte={busy.start:%Y-%m-%dT%H}%3A{busy.start:%M}" in href
    )
    assert staff_client.get(link).context["cl"].result_count == 2

    day = staff_client.get(DASHBOARD + "?window=24h")
    hours = day.context["d"].throughput
    assert len(hours) == 24  # a bar per hour (from the hourly rollups), the current one last
    assert hours[-1].start == now.replace(minute=0, second=0, microsecond=0)
    assert sum(b.succeeded for b in hours) == 2 and sum(b.failed for b in hours) == 1
    assert str(day.context["chart"]).count("<a href=") == 24  # one slice per hour
    week = staff_client.get(DASHBOARD + "?window=7d")
    assert len(week.context["d"].throughput) == 7 * 24


def test_an_unknown_window_falls_back_to_24_hours(staff_client):
    response = staff_client.get(DASHBOARD + "?window=forever")
    assert response.status_code == 200
    assert response.context["d"].window.key == "24h"


# --- Live state -------------------------------------------------------------------------------


def test_it_lists_runs_past_their_timeout_and_runs_queued_too_long(
    staff_client, make_agent, make_execution, settings
):
    settings.CONVEYOR_STUCK_QUEUED_AFTER = 120
    agent = make_agent(name="hangs", timeout=60)
    stuck = make_execution(agent, "running", ago=timedelta(minutes=5))
    make_execution(agent, "running", ago=timedelta(seconds=20))  # within its timeout
    old = make_execution(agent, "queued", ago=timedelta(minutes=10))
    make_execution(agent, "queued", ago=timedelta(seconds=30))
    # A delayed run counts from the time it may start.
    make_execution(
        agent, "queued", ago=timedelta(minutes=10), not_before=timezone.now() - timedelta(seconds=5)
    )

    response = staff_client.get(DASHBOARD)

    assert [s["e"].pk for s in response.context["stuck_timeout"]] == [stuck.pk]
    assert [s["e"].pk for s in response.context["stuck_queued"]] == [old.pk]
    html = response.content.decode()
    assert reverse("admin:executions_execution_change", args=[stuck.pk]) in html
    assert "Queued for more than 2 min" in html


def test_the_current_attempt_decides_whether_a_retried_run_is_past_its_timeout(
    make_agent, make_execution
):
    agent = make_agent(timeout=60)
    # The first attempt started 10 minutes ago; the second, just now.
    execution = make_execution(agent, "retrying", ago=timedelta(minutes=10))
    assert execution_claim(
        execution_id=execution.pk, expected_attempt=1, worker="w", at=timezone.now()
    )
    assert selectors.running_over_timeout(now=timezone.now()) == []


def test_a_flow_waiting_for_its_steps_is_not_taken_for_a_run_past_its_timeout(make_agent):
    from executions.flows import flow_start
    from executions.services import execution_request

    make_agent(name="step", timeout=60)
    flow = make_agent(
        name="flow", kind="flow", timeout=60, config={"steps": [{"key": "a", "agent": "step"}]}
    )
    started = timezone.now() - timedelta(minutes=10)
    run = execution_request(agent=flow, trigger="manual", at=started, hold=True)
    assert flow_start(execution_id=run.pk, expected_attempt=0, at=started)
    child = run.children.get()
    # The step claimed ten minutes ago and still running is past its agent's 60 s.
    assert execution_claim(execution_id=child.pk, expected_attempt=0, worker="w", at=started)

    assert [e.pk for e in selectors.running_over_timeout(now=timezone.now())] == [child.pk]


# --- Cost -------------------------------------------------------------------------------------


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("window", ["1h", "24h", "7d"])
def test_the_number_of_queries_does_not_grow_with_executions(
    staff_client, make_agent, make_execution, window
):
    url = f"{DASHBOARD}?window={window}"
    first = make_agent()
    make_execution(first, "succeeded", ago=timedelta(hours=2))
    make_execution(first, "succeeded")
    roll_up(until=timezone.now())
    few = _queries(staff_client, url)

    for i in range(8):
        agent = make_agent(queue=f"ops-q{i}")
        for status in ("succeeded", "failed", "running", "queued", "retrying", "cancelled"):
            make_execution(agent, status, ago=timedelta(hours=i, minutes=20))
    roll_up(until=timezone.now())
    many = _queries(staff_client, url)

    assert few == many
    # Session and user 2, figures from rollups and rows 10, live state and queues 4, capacity 4,
    # backlog 2, its samples 1, start latencies 2, agents worse than usual 1.
    assert many <= 26


def test_the_queues_panel_says_how_many_workers_read_each_queue_and_flags_none(
    staff_client, settings
):
    from ops import presence

    read, unread = f"read-{uuid.uuid4().hex[:6]}", f"unread-{uuid.uuid4().hex[:6]}"
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        read: {"description": "", "concurrency": None},
        unread: {"description": "", "concurrency": None},
    }
    presence.announce(worker="w1@host", queues=[read])
    try:
        response = staff_client.get(DASHBOARD)
    finally:
        presence.withdraw(worker="w1@host", queues=[read])

    rows = {q["name"]: q["workers"] for q in response.context["queues"]}
    assert (rows[read], rows[unread]) == (1, 0)
    assert unread in response.context["unread_queues"]
    assert read not in response.context["unread_queues"]
    html = response.content.decode()
    assert "No worker has read" in html and f"<code>{unread}</code>" in html
