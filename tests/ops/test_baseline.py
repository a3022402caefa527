"""Each agent against its own usual (ops.baseline): the comparison's rules as pure functions, and
``check`` over real executions rolled up, opening a regression once (one delivery per channel),
closing it once the agent is back, and opening (and telling) again when it slips again."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from agents.models import Agent
from notifications import messages
from notifications.models import Delivery
from notifications.services import channel_create
from ops import baseline
from ops.baseline import OK, TOO_FEW, WORSE, Window, compare_p95, compare_success
from ops.models import Regression
from ops.rollups import roll_up

# --- The comparison ------------------------------------------------------------------------------

EPOCH = timezone.now()


def window(runs=0, succeeded=None, timed=None, p95=None) -> Window:
    succeeded = runs if succeeded is None else succeeded
    return Window(
        since=EPOCH, until=None, runs=runs, succeeded=succeeded, timed=timed or succeeded, p95=p95
    )


def test_a_p95_half_as_long_again_is_not_yet_worse_beyond_it_it_is():
    usual = window(100, p95=4.0)
    assert compare_p95(window(30, p95=6.0), usual, percent=50, min_runs=20).state == OK
    worse = compare_p95(window(30, p95=6.1), usual, percent=50, min_runs=20)
    assert (worse.state, worse.last, worse.usual) == (WORSE, 6.1, 4.0)


def test_it_recovers_only_within_half_the_threshold():
    usual = window(100, p95=4.0)
    assert not compare_p95(window(30, p95=5.5), usual, percent=50, min_runs=20).recovered
    assert compare_p95(window(30, p95=5.0), usual, percent=50, min_runs=20).recovered
    usual = window(100, succeeded=98)
    assert not compare_success(window(100, 90), usual, points=10, min_runs=20).recovered
    assert compare_success(window(100, 93), usual, points=10, min_runs=20).recovered


def test_a_success_rate_ten_points_lower_is_not_yet_worse_eleven_is():
    usual = window(100, succeeded=98)
    assert compare_success(window(100, 88), usual, points=10, min_runs=20).state == OK
    assert compare_success(window(100, 87), usual, points=10, min_runs=20).state == WORSE


def test_too_few_runs_in_either_window_are_not_judged():
    few = compare_p95(window(5, p95=60.0), window(100, p95=1.0), percent=50, min_runs=20)
    assert (few.state, few.have, few.needed) == (TOO_FEW, 5, 20)
    # Durations count successful runs only: 30 runs, 10 successes.
    assert (
        compare_p95(window(30, 10, p95=60.0), window(100, p95=1.0), percent=50, min_runs=20).state
        == TOO_FEW
    )
    assert compare_success(window(100, 0), window(19), points=10, min_runs=20).state == TOO_FEW


def test_an_empty_threshold_is_not_watched():
    assert compare_p95(window(30, p95=60.0), window(100, p95=1.0), percent=None, min_runs=1).state
    assert (
        compare_success(window(30, 0), window(30), points=None, min_runs=1).state
        == baseline.NOT_WATCHED
    )


# --- check() over real runs ---------------------------------------------------------------------


@pytest.fixture
def watched(alice, make_agent):
    """An agent telling its owner on two channels (and one turned off)."""
    channels = [
        channel_create(owner=alice, kind="email", name=name, target=f"{name}@example.com")[0]
        for name in ("ops", "oncall", "old")
    ]
    channels[2].is_enabled = False
    channels[2].save()
    return make_agent(name="nightly-report", notify_channels=channels)


def runs(make_execution, agent, *, end: datetime, n: int, seconds: float, status="succeeded"):
    """``n`` runs over the 21 hours before ``end`` (inside its last day, also for a check an
    hour later), each ``seconds`` long (give or take 5%)."""
    for i in range(n):
        at = end - timedelta(hours=21) + timedelta(hours=21) * i / n
        make_execution(agent, status, at=at, seconds=seconds * (0.95 + 0.1 * (i % 11) / 10))


def usual_runs(make_execution, agent, *, end: datetime, n: int = 60, seconds: float = 1.0):
    """``n`` runs of about ``seconds`` over the 14 days before ``end``'s last day."""
    since, usual_since = baseline.windows(now=end)
    for i in range(n):
        at = usual_since + timedelta(minutes=10) + (since - usual_since) * i / n
        make_execution(agent, "succeeded", at=at, seconds=seconds * (0.95 + 0.1 * (i % 11) / 10))


def regressed(agent) -> list[Delivery]:
    return list(Delivery.objects.filter(execution__agent=agent, event="agent.regressed"))


def test_an_agent_three_times_slower_is_in_regression_told_once_and_clears_once_back(
    watched, make_execution
):
    now = timezone.now()
    first, second, third = now - timedelta(days=2), now - timedelta(days=1), now
    usual_runs(make_execution, watched, end=first)
    runs(make_execution, watched, end=first, n=50, seconds=3.0)
    roll_up(until=first)

    assert baseline.check(now=first).opened == 1
    assert baseline.check(now=first).opened == 0  # a second check tells no one again
    [regression] = Regression.objects.filter(agent=watched)
    assert (regression.what, regression.ended_at, regression.last_runs) == ("p95", None, 50)
    assert regression.last_value == pytest.approx(3.1, rel=0.05)
    assert regression.usual_value == pytest.approx(1.03, rel=0.05)
    told = regressed(watched)
    assert sorted(d.channel.name for d in told) == ["oncall", "ops"]  # not the one turned off
    assert {d.execution_id for d in told} == {regression.execution_id}

    # A day later, 50 runs back to their usual second: it clears, without a word.
    runs(make_execution, watched, end=second, n=50, seconds=1.0)
    roll_up(until=second)
    assert baseline.check(now=second).closed == 1
    regression.refresh_from_db()
    assert (regression.ended_at, regression.end_reason) == (second, "recovered")
    assert len(regressed(watched)) == 2

    # It slips again (its usual now counts the slow day too): a new regression, told again.
    runs(make_execution, watched, end=third, n=50, seconds=10.0)
    roll_up(until=third)
    assert baseline.check(now=third).opened == 1
    assert baseline.check(now=third).opened == 0
    assert Regression.objects.filter(agent=watched, ended_at__isnull=True).count() == 1
    assert len(regressed(watched)) == 4


def test_a_regression_that_comes_back_without_a_new_run_is_told_again(watched, make_execution):
    now = timezone.now()
    usual_runs(make_execution, watched, end=now)
    runs(make_execution, watched, end=now, n=30, seconds=3.0)
    roll_up(until=now)
    assert baseline.check(now=now).opened == 1
    # The owner stops watching durations, then watches them again: the same runs regress again.
    Agent.objects.filter(pk=watched.pk).update(regression_p95_percent=None)
    assert baseline.check(now=now).closed == 1
    Agent.objects.filter(pk=watched.pk).update(regression_p95_percent=50)
    assert baseline.check(now=now).opened == 1

    first, second = Regression.objects.filter(agent=watched).order_by("started_at", "id")
    assert first.execution_id != second.execution_id  # a delivery is unique per run
    told = regressed(watched)
    assert len(told) == 4
    assert {d.execution_id for d in told} == {first.execution_id, second.execution_id}


def test_a_drop_in_successes_is_a_regression_of_the_success_rate(watched, make_execution):
    now = timezone.now()
    usual_runs(make_execution, watched, end=now, n=40)
    runs(make_execution, watched, end=now, n=13, seconds=1.0)
    runs(make_execution, watched, end=now, n=12, seconds=1.0, status="failed")
    roll_up(until=now)

    found = baseline.against_usual(agents=[watched], now=now)[watched.pk]
    assert (found.p95.state, found.success.state) == (TOO_FEW, WORSE)  # 13 successes
    assert found.success.last == pytest.approx(13 / 25)
    assert baseline.check(now=now).opened == 1
    [regression] = Regression.objects.filter(agent=watched)
    assert (regression.what, regression.usual_value, regression.last_runs) == ("success", 1.0, 25)
    told = regressed(watched)
    assert len(told) == 2

    said = messages.summary(
        execution=told[0].execution, event="agent.regressed", recovered=False, at=now
    )
    assert said.lines()[0] == (
        "“nightly-report” succeeds less than usual: 52% of its runs succeeded over the last day, "
        "against 100% over the 14 days before (25 runs)."
    )
    assert said.lines()[1] == f"What to do: {messages.REGRESSED_WHAT_TO_DO}"
    assert messages.email_subject(said) == "[Conveyor] “nightly-report” succeeds less than usual"
    assert said.data["regression"]["what"] == "success"
    assert said.data["regression"]["last_day"] == pytest.approx(0.52)


def test_five_slow_runs_do_not_alarm(watched, make_execution):
    now = timezone.now()
    usual_runs(make_execution, watched, end=now)
    runs(make_execution, watched, end=now, n=5, seconds=30.0)
    roll_up(until=now)

    found = baseline.against_usual(agents=[watched], now=now)[watched.pk]
    assert found.state == TOO_FEW
    assert (found.too_few.have, found.too_few.needed) == (5, 20)
    assert baseline.check(now=now).opened == 0
    assert not Regression.objects.exists()
    assert not regressed(watched)


def test_an_open_regression_closes_when_too_few_runs_are_left_to_compare(watched, make_execution):
    now = timezone.now()
    start = now - timedelta(days=1)
    usual_runs(make_execution, watched, end=start)
    runs(make_execution, watched, end=start, n=30, seconds=3.0)
    roll_up(until=start)
    assert baseline.check(now=start).opened == 1
    roll_up(until=now)
    assert baseline.check(now=now).closed == 1  # no run since
    assert Regression.objects.get().end_reason == "too_few_runs"


def test_every_agent_is_read_in_the_same_few_queries(
    make_agent, make_execution, django_assert_max_num_queries
):
    now = timezone.now()
    for name in ("a", "b", "c"):
        agent = make_agent(name=name)
        runs(make_execution, agent, end=now, n=2, seconds=1.0)
    roll_up(until=now)
    with django_assert_max_num_queries(12):
        found = baseline.against_usual(now=now)
    assert len(found) == 3


def test_beat_checks_every_five_minutes_on_the_maintenance_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["conveyor-baselines"]
    assert entry["task"] == "ops.tasks.check_baselines"
    assert entry["schedule"] == 300.0
    assert entry["options"]["queue"] == settings.CONVEYOR_MAINTENANCE_QUEUE
