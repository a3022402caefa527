"""The dashboard's backlog panel: each queue's runs waiting and time to drain now, the runs
waiting over the window (from the queue samples) and the start latency per bar."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from ops import backlog
from ops.models import QueueSample

pytestmark = pytest.mark.django_db

DASHBOARD = "/ops/"


def panel(response) -> str:
    html = response.content.decode()
    return html[html.index('id="backlog"') : html.index('id="capacity"')]


def test_it_says_how_long_each_queue_takes_to_drain(staff_client, make_agent, make_execution):
    busy, stuck = make_agent(queue="ops-q1"), make_agent(queue="ops-q2")
    for _ in range(12):
        make_execution(busy, "queued", ago=timedelta(minutes=2))
    for _ in range(32):  # 4 a minute over the last 10 minutes, and over the last 2
        make_execution(busy, "succeeded", ago=timedelta(minutes=4), seconds=1)
    for _ in range(8):
        make_execution(busy, "succeeded", ago=timedelta(minutes=1), seconds=1)
    make_execution(stuck, "queued", ago=timedelta(minutes=7))

    html = panel(staff_client.get(DASHBOARD))

    row = re.search(r"<tr class=\"backlog-draining\">.*?ops-q1.*?</tr>", html, re.S).group(0)
    assert ">12<" in row
    assert (
        "about 3 minutes at the rate of the last 10 minutes "
        "(4 runs/min; 4 runs/min over the last 2 minutes)"
    ) in row
    stuck_row = re.search(r"<tr class=\"backlog-not_draining\">.*?ops-q2.*?</tr>", html, re.S)
    assert "not draining: no run finished in the last 10 minutes (0 running)" in stuck_row.group(0)
    assert "7 min" in stuck_row.group(0)  # its oldest run's wait
    total = html[html.index("<tfoot>") :]
    assert "All queues" in total and ">13<" in total
    # The other declared queues: named in one line, not a row each.
    quiet = html[html.index('id="quiet-queues"') :]
    assert "<code>ops-q3</code>" in quiet and "<code>ops-q1</code>" not in quiet
    assert "ops-q3" not in html[: html.index('id="quiet-queues"')]


def test_the_queue_links_to_its_waiting_runs_in_the_admin(staff_client, make_agent, make_execution):
    make_execution(make_agent(queue="ops-q1"), "queued")

    html = panel(staff_client.get(DASHBOARD))

    assert "agent__queue__exact=ops-q1&amp;status__in=queued%2Cretrying" in html


@pytest.mark.parametrize(("window", "points"), [("1h", 60), ("24h", 24), ("7d", 168)])
def test_the_runs_waiting_are_drawn_from_the_samples_over_the_window(
    staff_client, make_agent, window, points
):
    now = timezone.now()
    for minutes, queued in ((3, 5), (2, 8), (1, 2)):
        at = backlog.floor_minute(now - timedelta(minutes=minutes))
        QueueSample.objects.create(at=at, queue="ops-q4", queued=queued, oldest_age=60)
        QueueSample.objects.create(at=at, queue="ops-q5", queued=0)

    response = staff_client.get(f"{DASHBOARD}?window={window}")

    [series] = [s for s in response.context["d"].samples if s.queue == "ops-q4"]
    assert len(series.queued) == points
    assert max(v or 0 for v in series.queued) == 8
    html = panel(response)
    sampled = "sampled once a minute" + (
        "" if window == "1h" else " (the highest sample of each hour)"
    )
    assert f'aria-label="Runs waiting per queue, {sampled}"' in html
    assert f"<h3>Runs waiting, {sampled}</h3>" in html
    assert "the most in each" not in html
    assert 'data-series="ops-q4"' in html
    assert 'data-series="ops-q5"' not in html  # nothing waited there: no line
    assert "ops-q4: 8" in html  # the hover text of the point


def test_without_samples_it_says_where_they_come_from(staff_client):
    html = panel(staff_client.get(DASHBOARD))

    assert "No samples in this window yet" in html
    assert "conveyor-queue-samples" in html


def test_with_samples_and_nothing_waiting_it_says_so(staff_client):
    QueueSample.objects.create(at=backlog.floor_minute(timezone.now()), queue="ops-q4")

    html = panel(staff_client.get(DASHBOARD))

    assert "No run waited for a worker in this window" in html


def test_the_start_latency_is_drawn_per_bar_with_the_window_s_percentiles(
    staff_client, make_agent, make_execution
):
    agent = make_agent()
    for waited in (1, 2, 3, 4, 100):
        make_execution(agent, "succeeded", ago=timedelta(minutes=5), waited=waited)

    response = staff_client.get(f"{DASHBOARD}?window=1h")

    d = response.context["d"]
    assert d.latency_p50 == pytest.approx(3)
    assert d.latency_p95 == pytest.approx(80.8)  # between 4 and 100, as percentile_cont
    [bar] = [b for b in d.latency if b.count]
    assert (bar.count, bar.p50) == (5, pytest.approx(3))
    html = panel(response)
    assert 'aria-label="Start latency per minute: median and 95th percentile"' in html
    assert "Median 3.0 s" in html


def test_without_started_runs_the_latency_chart_says_so(staff_client):
    html = panel(staff_client.get(DASHBOARD))

    assert "No run created in this window has started yet." in html


def test_a_stall_after_a_burst_says_not_draining_lately(staff_client, make_agent, make_execution):
    agent = make_agent(queue="ops-q1")
    for _ in range(30):  # quick runs, 5 minutes ago
        make_execution(agent, "succeeded", ago=timedelta(minutes=5), seconds=0.1)
    for _ in range(2):
        make_execution(agent, "running", ago=timedelta(minutes=3))
    for _ in range(25):
        make_execution(agent, "queued", ago=timedelta(minutes=2))

    html = panel(staff_client.get(DASHBOARD))

    row = re.search(r"<tr class=\"backlog-not_draining\">.*?ops-q1.*?</tr>", html, re.S)
    assert "not draining lately: no run finished in the last 2 minutes (2 running)" in row.group(0)
    assert "the slower of its last 2 minutes' and last 10 minutes'" in html  # the page's note


# --- Live ---------------------------------------------------------------------------------------


def test_the_backlog_table_and_the_now_counts_refresh_every_10_seconds(staff_client):
    html = staff_client.get(DASHBOARD).content.decode()

    now = re.search(r'<div id="backlog-now"[^>]*>', html).group(0)
    assert 'hx-get="/ops/backlog/"' in now and 'hx-trigger="every 10s"' in now
    assert '<div id="live-counts">' in html  # the target of the counts swapped out of band


def test_the_backlog_fragment_is_the_table_and_the_now_counts(
    staff_client, make_agent, make_execution, django_assert_max_num_queries
):
    agent = make_agent(queue="ops-q1")
    first = staff_client.get("/ops/backlog/").content.decode()
    for _ in range(3):
        make_execution(agent, "queued", ago=timedelta(minutes=1))
    make_execution(agent, "running", ago=timedelta(seconds=30))

    # Session and user 2, queue names 1, backlog 2, the Now counts 1.
    with django_assert_max_num_queries(6):
        response = staff_client.get("/ops/backlog/")

    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    html = response.content.decode()
    assert "<html" not in html and 'id="backlog-now"' not in html  # the inside only
    row = re.search(r"<tr class=\"backlog-not_draining\">.*?ops-q1.*?</tr>", html, re.S)
    assert ">3<" in row.group(0) and "(1 running)" in row.group(0)
    assert "ops-q1" not in first.split('id="quiet-queues"')[0]  # nothing there before
    live = html[html.index('<div id="live-counts" hx-swap-oob="innerHTML">') :]
    assert re.search(r'Queued</div><div class="stat">3<', live)
    assert re.search(r'Running</div><div class="stat">1<', live)


def test_the_backlog_fragment_is_for_operators_only(client, alice):
    assert client.get("/ops/backlog/").status_code == 302  # to the sign-in page
    client.force_login(alice)
    assert client.get("/ops/backlog/").status_code == 403
