"""Hourly and daily rollups (ops.rollups): what ``roll_up`` writes, that running it again changes
nothing and costs little, that runs finishing after their period was rolled are added to it,
and that every reader (the dashboard's windows, /metrics, the agent page's and the API's
statistics) shows the same figures from rollups and raw rows as the raw rows alone gave, and
still does once the rolled rows are deleted."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.services import agent_delete
from config.celery import app
from executions.models import Execution
from executions.selectors import STATS_WINDOW, agents_overview, percentile
from executions.services import attempt_succeed
from ops import rollups, selectors, tasks
from ops.models import Rollup, RollupCursor
from ops.rollups import ALL, DAY, HOUR, floor_day, floor_hour, roll_up

pytestmark = pytest.mark.django_db

Status = Execution.Status
# Percentiles over rollups merge histograms whose buckets stand for their values within 1%.
CLOSE = 0.011


# --- Pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.0004, 0.001, 0.05, 0.3, 1, 1.5, 59.9, 3600, 3 * 86400])
def test_a_histogram_bucket_stands_for_its_durations_within_one_percent(seconds):
    value = rollups.bucket_value(rollups.histogram_key(seconds))
    assert value == pytest.approx(max(seconds, rollups.SHORTEST), rel=rollups.PRECISION)


def test_percentiles_of_exact_durations_are_those_of_percentile_cont():
    values = [0.2, 1, 1.5, 3, 8, 13, 21, 400]
    durations = rollups.Durations()
    durations.add_values(values)
    for q in (0, 0.3, 0.5, 0.95, 1):
        assert durations.percentile(q) == pytest.approx(percentile(values, q))
    assert rollups.Durations().percentile(0.5) is None


def test_percentiles_of_histograms_are_within_one_percent_of_the_exact_ones():
    values = sorted(0.37 * i**1.5 for i in range(1, 400))
    durations = rollups.Durations()
    durations.add_histogram(Counter(str(rollups.histogram_key(v)) for v in values))
    for q in (0.05, 0.5, 0.95):
        assert durations.percentile(q) == pytest.approx(percentile(values, q), rel=CLOSE)


# --- A history of runs, and what the raw rows alone say about it (the oracle) -----------------


@pytest.fixture
def history(make_agent, make_execution):
    """Three agents' runs over the last nine days in every state: most settled long ago, some
    still active in past hours, one created over an hour ago that finished a minute ago, and a
    few in the current hour."""
    hour = floor_hour(timezone.now())
    fast, slow, flaky = make_agent(name="fast"), make_agent(name="slow"), make_agent(name="flaky")

    def at(hours: int, minutes: int):
        return hour - timedelta(hours=hours, minutes=-minutes)

    for n, hours in enumerate([1, 2, 3, 5, 8, 13, 22, 23, 24, 25, 30, 47, 71, 100, 167, 168, 200]):
        make_execution(fast, "succeeded", at=at(hours, 7), seconds=0.2 + n * 0.13)
        make_execution(slow, "succeeded", at=at(hours, 20), seconds=30 + 7 * n, attempt=1 + n % 2)
        if n % 3 == 0:
            make_execution(flaky, "failed", at=at(hours, 31), attempt=3, error_category="network")
        elif n % 3 == 1:
            make_execution(flaky, "failed", at=at(hours, 40), error_category="auth", seconds=0.5)
        else:
            make_execution(flaky, "succeeded", at=at(hours, 45), attempt=2, seconds=2.5)
        if n % 4 == 0:
            make_execution(slow, "cancelled", at=at(hours, 50))
    # A four-hour run, thirty hours ago: its hour is rolled before it ends.
    make_execution(slow, "succeeded", at=at(30, 0), seconds=4 * 3600)
    # Active runs created in past hours.
    make_execution(slow, "running", at=at(2, 10))
    make_execution(flaky, "retrying", at=at(5, 5))
    make_execution(fast, "queued", at=at(3, 0), not_before=timezone.now() + timedelta(hours=2))
    # Created 75 minutes ago, finished a minute ago: not settled at the roll.
    make_execution(slow, "succeeded", ago=timedelta(minutes=75), seconds=74 * 60)
    # Now.
    make_execution(fast, "succeeded", ago=timedelta(seconds=30), seconds=1)
    make_execution(flaky, "failed", ago=timedelta(seconds=20), error_category="timeout")
    return fast, slow, flaky


def raw_window(since) -> dict:
    """What the dashboard showed from the raw rows alone (the computation before rollups)."""
    rows = list(
        Execution.objects.filter(created_at__gte=since).values(
            "agent_id", "status", "error_category", "duration", "created_at"
        )
    )
    succeeded = [r for r in rows if r["status"] == Status.SUCCEEDED and r["duration"]]
    by_agent: dict[int, Counter] = {}
    for r in rows:
        by_agent.setdefault(r["agent_id"], Counter())[r["status"]] += 1
    hours: dict = {}
    for r in rows:
        counts = hours.setdefault(floor_hour(r["created_at"]), [0, 0, 0])
        counts[0] += 1
        counts[1] += r["status"] == Status.SUCCEEDED
        counts[2] += r["status"] == Status.FAILED
    return {
        "counts": Counter(r["status"] for r in rows),
        "durations": sorted(r["duration"].total_seconds() for r in succeeded),
        "agents": {
            agent_id: (sum(c.values()), c[Status.SUCCEEDED], c[Status.FAILED])
            for agent_id, c in by_agent.items()
        },
        "agent_durations": {
            agent_id: sorted(
                r["duration"].total_seconds() for r in succeeded if r["agent_id"] == agent_id
            )
            for agent_id in by_agent
        },
        "failures": Counter(r["error_category"] for r in rows if r["status"] == Status.FAILED),
        "hours": {start: tuple(c) for start, c in hours.items()},
    }


def raw_metrics() -> dict:
    """What /metrics reported from the raw rows alone."""
    rows = list(
        Execution.objects.values("agent_id", "status", "error_category", "attempt", "duration")
    )
    timed: dict[int, list[float]] = {}
    for r in rows:
        if r["duration"] is not None:
            timed.setdefault(r["agent_id"], []).append(r["duration"].total_seconds())
    return {
        "by_status": dict(Counter((r["status"], r["error_category"]) for r in rows)),
        "attempts": sum(r["attempt"] for r in rows),
        "retries": sum(max(r["attempt"] - 1, 0) for r in rows),
        "durations": {
            agent_id: (
                [sum(s <= b for s in seconds) for b in rollups.DURATION_BUCKETS],
                len(seconds),
                pytest.approx(sum(seconds)),
            )
            for agent_id, seconds in timed.items()
        },
    }


SPANS = (timedelta(days=1), timedelta(days=7), timedelta(days=30))  # the API's windows


def readers(agents, now) -> dict:
    """What every reader shows: the dashboard's 24-hour and 7-day windows, /metrics, and the
    statistics of the agent page and the API over each of the API's windows."""
    figures = {}
    for key in ("24h", "7d"):
        d = selectors.dashboard(window=selectors.WINDOWS[key], now=now)
        figures[f"dashboard {key}"] = {
            "since": d.since,
            "overview": d.overview,
            "agents": d.agents,
            "failures": d.failures,
            "throughput": d.throughput,
        }
    figures["metrics"] = selectors.metrics_snapshot()
    figures["agents list"] = {
        "since": selectors.hours_back(STATS_WINDOW, now=now),
        "agents": {
            a.pk: (a.runs_window, a.succeeded_window, a.failed_window)
            for a in agents_overview(owner=agents[0].owner, now=now)
        },
    }
    for agent in agents:
        for span in SPANS:
            figures[f"{agent.name} {span.days}d"] = selectors.agent_stats(
                agent=agent, span=span, now=now
            )
    return figures


def assert_same_as_rows(figures: dict, agents) -> None:
    """Each figure is the one the raw rows alone give (the computation before rollups):
    counts exactly, percentiles within 1%."""
    for key in ("24h", "7d"):
        d = figures[f"dashboard {key}"]
        raw = raw_window(d["since"])
        ov, counts = d["overview"], raw["counts"]
        assert (ov.started, ov.succeeded, ov.failed, ov.cancelled, ov.active) == (
            counts.total(),
            counts[Status.SUCCEEDED],
            counts[Status.FAILED],
            counts[Status.CANCELLED],
            sum(counts[s] for s in Execution.ACTIVE_STATUSES),
        ), key
        assert ov.p50 == pytest.approx(percentile(raw["durations"], 0.5), rel=CLOSE)
        assert ov.p95 == pytest.approx(percentile(raw["durations"], 0.95), rel=CLOSE)
        assert {a.agent_id: (a.runs, a.succeeded, a.failed) for a in d["agents"]} == raw["agents"]
        for a in d["agents"]:
            exact = raw["agent_durations"][a.agent_id]
            assert a.p50 == pytest.approx(percentile(exact, 0.5), rel=CLOSE)
            assert a.p95 == pytest.approx(percentile(exact, 0.95), rel=CLOSE)
        assert {c: n for c, _label, n in d["failures"]} == raw["failures"]
        ranked = [n for _c, _label, n in d["failures"]]
        assert ranked == sorted(ranked, reverse=True)
        bars = {b.start: (b.total, b.succeeded, b.failed) for b in d["throughput"] if b.total}
        assert bars == raw["hours"], key
        assert len(d["throughput"]) == {"24h": 24, "7d": 7 * 24}[key]

    snapshot, raw = figures["metrics"], raw_metrics()
    assert snapshot.by_status == raw["by_status"]
    assert (snapshot.attempts, snapshot.retries) == (raw["attempts"], raw["retries"])
    assert {
        agent_id: (cumulative, n, total)
        for agent_id, (_name, _owner, _uuid, cumulative, n, total) in snapshot.durations.items()
    } == raw["durations"]

    listed = figures["agents list"]
    shown = {pk: counts for pk, counts in listed["agents"].items() if counts[0]}
    assert shown == raw_window(listed["since"])["agents"]

    for agent in agents:
        for span in SPANS:
            stats = figures[f"{agent.name} {span.days}d"]
            raw = raw_window(stats.since)
            assert (stats.runs, stats.succeeded, stats.failed) == raw["agents"][agent.pk]
            exact = raw["agent_durations"][agent.pk]
            assert stats.p50 == pytest.approx(percentile(exact, 0.5), rel=CLOSE)
            assert stats.p95 == pytest.approx(percentile(exact, 0.95), rel=CLOSE)


# --- The readers --------------------------------------------------------------------------------


def test_every_reader_shows_from_rollups_what_the_rows_showed_and_keeps_it_once_they_are_gone(
    history, alice_client
):
    now = timezone.now()
    assert_same_as_rows(readers(history, now), history)  # no rollup yet: all from rows

    assert roll_up(until=now) > 0

    rolled = readers(history, now)
    assert_same_as_rows(rolled, history)
    # Retention deletes the rows of past hours (those settled: the rollups count them).
    gone = Execution.objects.filter(
        created_at__lt=floor_hour(now),
        status__in=Execution.TERMINAL_STATUSES,
        finished_at__lt=now - rollups.SETTLE,
    )
    assert gone.count() > 50
    gone.delete()
    # Left: the active runs of past hours, the one finished a minute ago, the current hour's.
    assert Execution.objects.count() <= 8
    assert readers(history, now) == rolled
    # The agent page reads them too: its past hours' runs are counted, their rows gone.
    fast = history[0]
    assert alice_client.get(f"/agents/{fast.uuid}/").context["stats"].runs > 10


def test_a_window_that_starts_inside_an_hour_reads_that_hour_from_rows(history):
    now = timezone.now()
    roll_up(until=now)
    since = floor_hour(now) - timedelta(hours=30, minutes=-17)  # 16:17 for 17:00 ... now
    part = rollups.split(since=since)
    counted = rollups.rollup_totals(part.site).runs
    assert counted == sum(
        f.runs for f in rollups.rollup_totals(part.agents, by="agent_id").values()
    )
    counted += sum(f.runs for f in rollups.count(part.raw, HOUR).values())
    assert counted == Execution.objects.filter(created_at__gte=since).count()
    assert part.raw.filter(created_at__lt=since + timedelta(minutes=43)).exists()


# --- Writing ------------------------------------------------------------------------------------


def _rounded(row: tuple) -> tuple:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in row)


def _rows() -> list[tuple]:
    fields = [f for f in rollups.ROLLUP_FIELDS if f != "updated_at"]
    return sorted(
        (r.agent_id or 0, r.period, r.start, *(getattr(r, f) for f in fields))
        for r in Rollup.objects.all()
    )


@pytest.fixture
def yesterday(make_agent, make_execution):
    """An agent's runs at 03:10, 03:40 and 15:00 yesterday (UTC)."""
    day = floor_day(timezone.now()) - timedelta(days=1)
    agent = make_agent(name="daily")
    make_execution(agent, "succeeded", at=day + timedelta(hours=3, minutes=10), seconds=2)
    make_execution(
        agent, "succeeded", at=day + timedelta(hours=3, minutes=40), seconds=4, attempt=2
    )
    make_execution(
        agent, "failed", at=day + timedelta(hours=3, minutes=50), error_category="auth", seconds=0.3
    )
    make_execution(agent, "cancelled", at=day + timedelta(hours=15))
    return agent, day


def test_it_writes_a_rollup_per_agent_and_hour_and_per_agent_and_day(yesterday):
    agent, day = yesterday

    roll_up(until=timezone.now())

    hour = Rollup.objects.get(agent=agent, period=HOUR, start=day + timedelta(hours=3))
    assert (hour.succeeded, hour.failed, hour.cancelled) == (2, 1, 0)
    assert hour.categories == {"failed:auth": 1, "succeeded:": 2}
    assert (hour.attempts, hour.retries) == (4, 1)
    assert (hour.p50, hour.p95) == (pytest.approx(3.0), pytest.approx(3.9))
    assert sum(hour.durations.values()) == 2
    assert (hour.duration_count, hour.duration_sum) == (3, pytest.approx(6.3))
    assert hour.duration_le["0.5"] == 1 and hour.duration_le["2.5"] == 2
    assert hour.duration_le["5"] == 3
    assert list(
        Rollup.objects.filter(agent=agent, period=HOUR).values_list("start", flat=True)
    ) == [
        day + timedelta(hours=3),
        day + timedelta(hours=15),
    ]
    whole = Rollup.objects.get(agent=agent, period=DAY, start=day)
    assert (whole.succeeded, whole.failed, whole.cancelled, whole.attempts) == (2, 1, 1, 4)
    assert whole.categories == {"cancelled:cancelled": 1, "failed:auth": 1, "succeeded:": 2}
    assert (whole.p50, whole.p95) == (hour.p50, hour.p95)
    # The site's rows count every agent's runs; the all-time rows every rolled hour's.
    site = Rollup.objects.get(agent=None, period=HOUR, start=day + timedelta(hours=3))
    assert (site.succeeded, site.failed, site.categories, site.p95) == (
        hour.succeeded,
        hour.failed,
        hour.categories,
        hour.p95,
    )
    assert Rollup.objects.get(agent=agent, period=ALL).runs == 4
    assert Rollup.objects.get(agent=None, period=ALL).runs == 4
    # Today is not over: no day row for it yet.
    assert not Rollup.objects.filter(period=DAY, start__gte=floor_day(timezone.now())).exists()


def test_running_it_again_changes_nothing_and_costs_a_few_queries(yesterday):
    now = timezone.now()
    roll_up(until=now)
    rows = _rows()

    with CaptureQueriesContext(connection) as ctx:
        assert roll_up(until=now) == 0
        assert roll_up(until=now - timedelta(hours=5)) == 0  # never backwards

    assert _rows() == rows
    assert len(ctx.captured_queries) <= 10


def test_a_period_rolled_again_from_its_rows_is_overwritten_not_added_to(yesterday):
    now = timezone.now()
    roll_up(until=now)
    rows = _rows()

    RollupCursor.objects.all().delete()  # as if never rolled: every period again from its rows
    assert roll_up(until=now) == len(rows)

    assert _rows() == rows


def test_a_run_that_settles_after_its_hour_was_rolled_is_added_to_it_and_its_day(
    make_agent, make_execution
):
    agent = make_agent()
    hour = floor_day(timezone.now()) - timedelta(hours=6)  # 18:00 yesterday
    make_execution(agent, "succeeded", at=hour + timedelta(minutes=1), seconds=10)
    make_execution(agent, "succeeded", at=hour + timedelta(minutes=2), seconds=20)
    late = make_execution(agent, "running", at=hour + timedelta(minutes=3))
    now = timezone.now()
    roll_up(until=now)
    assert Rollup.objects.get(agent=agent, period=HOUR, start=hour).succeeded == 2

    # Retention deletes the hour's settled rows; the late run ends.
    Execution.objects.exclude(pk=late.pk).delete()
    attempt = late.attempts.get()
    assert attempt_succeed(execution=late, attempt=attempt, result=None, at=now)
    # Counted once meanwhile: from its row (finished since the roll), not from the rollup.
    assert selectors.metrics_snapshot().by_status == {("succeeded", ""): 3}
    assert selectors.agent_stats(agent=agent, now=now).succeeded == 3

    # Not settled yet at the next roll (it finished less than SETTLE before): nothing added.
    roll_up(until=now + timedelta(minutes=1))
    assert Rollup.objects.get(agent=agent, period=HOUR, start=hour).succeeded == 2
    roll_up(until=now + rollups.SETTLE + timedelta(seconds=1))

    for period, start in ((HOUR, hour), (DAY, floor_day(hour)), (ALL, rollups.EPOCH)):
        for row in Rollup.objects.filter(period=period, start=start):  # the agent's, the site's
            assert (row.succeeded, row.attempts, row.duration_count) == (3, 3, 3)
            assert sum(row.durations.values()) == 3
            # The merged histogram's median: the 20 s run, within 1%.
            assert row.p50 == pytest.approx(20, rel=CLOSE)
    assert Rollup.objects.filter(start=hour).count() == 2
    assert selectors.metrics_snapshot().by_status == {("succeeded", ""): 3}
    assert selectors.agent_stats(agent=agent, now=now).succeeded == 3


def test_rolling_hour_by_hour_writes_what_one_roll_writes(history):
    now = timezone.now()
    slow, hour = history[1], floor_hour(now)

    def rolls(*hours_ago: int) -> int:  # the slow agent's successes 30 hours ago, once rolled
        for n in hours_ago:
            roll_up(until=hour - timedelta(hours=n, minutes=-30))
        return Rollup.objects.get(
            agent=slow, period=HOUR, start=hour - timedelta(hours=30)
        ).succeeded

    assert rolls(200, 29) == 1
    assert rolls(24, 20, 5, 2) == 2  # the four-hour run settled in between: added
    roll_up(until=now)
    step_by_step = _rows()
    RollupCursor.objects.all().delete()
    Rollup.objects.all().delete()

    roll_up(until=now)

    at_once = _rows()
    assert len(step_by_step) == len(at_once) > 50
    p50, p95 = (rollups.ROLLUP_FIELDS.index(f) + 3 for f in ("p50", "p95"))
    for a, b in zip(step_by_step, at_once, strict=True):
        # Added to after their first roll, a period's percentiles come from its histogram.
        for i in (p50, p95):
            assert a[i] == (b[i] if b[i] is None else pytest.approx(b[i], rel=CLOSE)), a[:3]
        assert _rounded(a[:p50] + a[p95 + 1 :]) == _rounded(b[:p50] + b[p95 + 1 :]), a[:3]


def test_an_agent_deleted_takes_its_rollups_but_the_site_keeps_its_history(
    make_agent, make_execution
):
    kept, dropped = make_agent(name="kept"), make_agent(name="dropped")
    for agent in (kept, dropped):
        make_execution(agent, "succeeded", ago=timedelta(hours=3), attempt=2)
    now = timezone.now()
    roll_up(until=now)

    agent_delete(agent=dropped)

    assert not Rollup.objects.filter(agent_id=dropped.pk).exists()
    assert Rollup.objects.filter(agent=kept).exists()
    # Its series goes; the counters keep its runs (a Prometheus counter never goes down).
    metrics = selectors.metrics_snapshot()
    assert list(metrics.durations) == [kept.pk]
    assert metrics.by_status == {("succeeded", ""): 2}
    assert (metrics.attempts, metrics.retries) == (4, 2)
    day = selectors.dashboard(window=selectors.WINDOWS["24h"], now=now)
    assert day.overview.started == 2
    assert [a.name for a in day.agents] == ["kept"]


@pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="the rollups are written in SQL on Postgres only",
)
def test_postgres_writes_in_sql_the_rollups_python_computes(history):
    now = timezone.now()
    settled = Execution.objects.filter(rollups.settled(now), created_at__lt=floor_hour(now))

    def written(in_sql: bool) -> list[tuple]:
        Rollup.objects.all().delete()
        for kind in (HOUR, DAY, ALL):
            rollups._write(settled, kind, at=now, in_sql=in_sql)
        return [_rounded(row) for row in _rows()]

    in_sql = written(True)
    assert len(in_sql) > 50
    assert in_sql == written(False)


# --- Schedule -----------------------------------------------------------------------------------


def test_beat_rolls_up_every_hour_on_the_maintenance_queue(yesterday):
    entry = settings.CELERY_BEAT_SCHEDULE["conveyor-rollups"]
    assert entry["task"] == "ops.tasks.roll_up"
    assert entry["schedule"].minute == {5}
    assert entry["options"]["queue"] == settings.CONVEYOR_MAINTENANCE_QUEUE
    app.loader.import_default_modules()
    task = app.tasks["ops.tasks.roll_up"]
    assert app.amqp.router.route({}, task.name)["queue"].name == (
        settings.CONVEYOR_MAINTENANCE_QUEUE
    )
    # The task's body rolls up to now.
    assert tasks.roll_up() > 0
    assert RollupCursor.objects.get().hours_until == floor_hour(timezone.now())


# --- Start latencies ----------------------------------------------------------------------------


@pytest.fixture
def waits(make_agent, make_execution):
    """Runs that waited before their first attempt started, over the last three days."""
    hour = floor_hour(timezone.now())
    one, two = make_agent(name="one"), make_agent(name="two")
    for n, hours in enumerate([1, 2, 5, 30, 31, 60]):
        at = hour - timedelta(hours=hours, minutes=-10)
        make_execution(one, "succeeded", at=at, waited=0.01 * (n + 1), seconds=1)
        make_execution(two, "failed", at=at, waited=3 + n, attempt=2, error_category="network")
        # A delayed run waits from its start time, not from its creation.
        make_execution(two, "succeeded", at=at, waited=600, not_before=at + timedelta(minutes=9))
        make_execution(two, "cancelled", at=at)  # never started: no latency
    return one, two


def test_a_rollup_keeps_the_start_latencies_of_the_runs_that_started(waits):
    one, _two = waits
    roll_up(until=timezone.now())
    start = floor_hour(timezone.now()) - timedelta(hours=5)

    site = Rollup.objects.get(period=HOUR, start=start, agent__isnull=True)
    assert site.latency_count == 3
    # 0.03 s for one's run; 5 s for two's failed one (its first attempt); 60 s for the delayed.
    assert site.latency_sum == pytest.approx(0.03 + 5 + 60)
    assert sum(site.latencies.values()) == 3
    merged = rollups.Durations()
    merged.add_histogram(site.latencies)
    assert merged.percentile(0.5) == pytest.approx(5, rel=CLOSE)
    everything = Rollup.objects.get(period=ALL, agent__isnull=True)
    assert everything.latency_count == 18
    assert Rollup.objects.get(period=ALL, agent=one).latency_count == 6


def test_late_finishers_add_their_start_latencies(make_agent, make_execution):
    agent = make_agent()
    at = floor_hour(timezone.now()) - timedelta(hours=3)
    make_execution(agent, "succeeded", at=at, waited=2, seconds=1)
    running = make_execution(agent, "running", at=at + timedelta(minutes=1), waited=4)
    roll_up(until=timezone.now() - timedelta(minutes=30))

    attempt = running.attempts.get()
    assert attempt_succeed(execution=running, attempt=attempt, result=None, at=timezone.now())
    roll_up(until=timezone.now() + rollups.SETTLE)

    site = Rollup.objects.get(period=HOUR, start=at, agent__isnull=True)
    assert (site.latency_count, site.latency_sum) == (2, pytest.approx(6))
    assert sum(site.latencies.values()) == 2


@pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="the rollups are written in SQL on Postgres only",
)
def test_postgres_writes_in_sql_the_start_latencies_python_computes(waits):
    now = timezone.now()
    settled = Execution.objects.filter(rollups.settled(now), created_at__lt=floor_hour(now))

    def written(in_sql: bool) -> list[tuple]:
        Rollup.objects.all().delete()
        for kind in (HOUR, DAY, ALL):
            rollups._write(settled, kind, at=now, in_sql=in_sql)
        return [_rounded(row) for row in _rows()]

    in_sql = written(True)
    assert any(row[-3] for row in in_sql)  # latency_count: some runs started
    assert in_sql == written(False)


@pytest.mark.parametrize(
    "since_hours, until_hours",
    [
        (200, 24),  # whole days in the middle, hours at both edges
        (30, 2),  # hours only, ending before the cursor
        (9 * 24, 0),  # ending at the cursor
        (5, -1),  # ending after the cursor: the current hour from rows
        (3, 3),  # empty
    ],
)
def test_a_window_with_an_end_reads_what_the_rows_say_of_it(history, since_hours, until_hours):
    now = timezone.now()
    roll_up(until=now)
    hour = floor_hour(now)
    since = hour - timedelta(hours=since_hours, minutes=-17)  # inside an hour
    until = hour - timedelta(hours=until_hours)
    part = rollups.split(since=since, until=until)
    totals = rollups.rollup_totals(part.agents, by="agent_id")
    for (agent_id, _hour), figures in rollups.count(part.raw, HOUR).items():
        totals.setdefault(agent_id, rollups.Figures()).add(figures)
    rows = Execution.objects.filter(created_at__gte=since, created_at__lt=until)
    for agent in history:
        mine = rows.filter(agent=agent)
        got = totals.get(agent.pk, rollups.Figures())
        assert (got.runs, got.succeeded, got.failed) == (
            mine.count(),
            mine.filter(status=Status.SUCCEEDED).count(),
            mine.filter(status=Status.FAILED).count(),
        )
        durations = rollups.Durations()
        durations.add_histogram(rollups.json_totals(part.agents.filter(agent=agent), "durations"))
        durations.add_values(
            d.total_seconds()
            for d in rollups.succeeded_durations(part.raw.filter(agent=agent)).values_list(
                "duration", flat=True
            )
        )
        exact = sorted(
            d.total_seconds()
            for d in rollups.succeeded_durations(mine).values_list("duration", flat=True)
        )
        assert len(durations) == len(exact)
        if exact:
            assert durations.percentile(0.95) == pytest.approx(percentile(exact, 0.95), rel=0.01)


def test_a_window_ends_on_a_whole_hour():
    with pytest.raises(ValueError):
        rollups.split(since=None, until=timezone.now().replace(minute=1))


def _figures(window_key: str, now) -> tuple:
    window = selectors.WINDOWS[window_key]
    overview, agents = selectors.window_figures(selectors.window_rows(since=window.start(now)))
    return (
        (overview.started, overview.succeeded, overview.failed, overview.p50, overview.p95),
        [(a.agent_id, a.runs, a.succeeded, a.failed, a.p50, a.p95) for a in agents],
    )


def test_a_window_reads_its_rollups_once_per_roll_and_again_after_the_next(history, monkeypatch):
    monkeypatch.setattr(rollups, "kept_rows", rollups._KeptRows())
    # Two rolls a second apart in the same hour: the same statements read different rollups.
    now = min(timezone.now(), floor_hour(timezone.now()) + timedelta(minutes=59, seconds=58))
    roll_up(until=now)

    with CaptureQueriesContext(connection) as first:
        figures = _figures("7d", now)
    with CaptureQueriesContext(connection) as again:
        assert _figures("7d", now) == figures
    # Each agent's totals and the durations, the site's and the busiest agents', are kept.
    assert len(again.captured_queries) == len(first.captured_queries) - 3

    # The run still running two hours after its start finishes just before the next roll's
    # settling time: that roll adds it to its hour's rollups, which the rows kept for the last
    # roll do not count (and its row is no longer read apart).
    late = Execution.objects.get(agent=history[1], status=Status.RUNNING)
    Execution.objects.filter(pk=late.pk).update(
        status=Status.SUCCEEDED,
        finished_at=now - rollups.SETTLE + timedelta(milliseconds=500),
        duration=timedelta(seconds=7),
    )
    roll_up(until=now + timedelta(seconds=1))
    with CaptureQueriesContext(connection) as after:
        rolled = _figures("7d", now)
    assert len(after.captured_queries) == len(first.captured_queries)
    monkeypatch.setattr(rollups, "kept_rows", rollups._KeptRows())
    assert _figures("7d", now) == rolled
    slow_runs = {a[0]: a[2] for a in rolled[1]}[history[1].pk]
    assert slow_runs == {a[0]: a[2] for a in figures[1]}[history[1].pk] + 1


def test_a_deleted_agent_in_the_rows_kept_for_the_rollups_is_not_shown(
    make_agent, make_execution, monkeypatch
):
    monkeypatch.setattr(rollups, "kept_rows", rollups._KeptRows())
    kept, dropped = make_agent(name="kept"), make_agent(name="dropped")
    for agent in (kept, dropped):
        make_execution(agent, "succeeded", ago=timedelta(hours=30), seconds=2)
    now = timezone.now()
    roll_up(until=now)
    assert sorted(a[0] for a in _figures("7d", now)[1]) == sorted([kept.pk, dropped.pk])

    agent_delete(agent=dropped)  # its rollups go with it; the rows kept for them stay

    assert [a[0] for a in _figures("7d", now)[1]] == [kept.pk]
