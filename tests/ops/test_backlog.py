"""The backlog of each queue (what waits for a worker), its oldest run, and the time to drain it
at the queue's completion rate (ops.backlog)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from ops import backlog
from ops.backlog import RATE_WINDOW, RECENT_WINDOW, drain_estimate, start_latency
from ops.models import QueueSample

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# --- The rule, on its own -----------------------------------------------------------------------


def test_time_to_drain_is_the_backlog_over_the_completion_rate():
    drain = drain_estimate(backlog=120, finished=400, recent_finished=80)

    assert drain.state == "draining"
    assert drain.per_minute == 40
    assert drain.seconds == pytest.approx(180)  # 120 runs at 40 a minute: 3 minutes
    assert str(drain) == (
        "about 3 minutes at the rate of the last 10 minutes "
        "(40 runs/min; 40 runs/min over the last 2 minutes)"
    )


def test_it_drains_at_the_slower_of_the_last_2_and_10_minutes_rates():
    # Faster lately (more workers): the 10 minutes' rate, the slower, is the one used.
    faster = drain_estimate(backlog=100, finished=200, recent_finished=100)
    assert (faster.per_minute, faster.rate_window) == (20, RATE_WINDOW)
    assert faster.seconds == pytest.approx(300)
    # Slower lately: the last 2 minutes' rate, and it says so.
    slower = drain_estimate(backlog=100, finished=200, recent_finished=10)
    assert (slower.per_minute, slower.rate_window) == (5, RECENT_WINDOW)
    assert slower.seconds == pytest.approx(20 * 60)
    assert str(slower) == (
        "about 20 minutes at the rate of the last 2 minutes "
        "(5 runs/min; 20 runs/min over the last 10 minutes)"
    )


def test_a_burst_of_quick_runs_does_not_hide_a_stall():
    """1,000 quick runs finished, then 6 runs of 300 s took both worker slots and 25 more wait:
    the 10 minutes' rate alone said "about 16 seconds" though nothing can finish for 5
    minutes."""
    drain = drain_estimate(backlog=25, finished=1000, recent_finished=0, running=2)

    assert (drain.state, drain.seconds) == ("not_draining", None)
    assert str(drain) == "not draining lately: no run finished in the last 2 minutes (2 running)"


def test_runs_longer_than_the_burst_before_them_drain_at_their_own_rate():
    """14 runs of 20 s wait on 2 slots (at least 140 s of work) after a burst of quick runs:
    the 10 minutes' rate (129 runs) said "about 65 seconds"; the last 2 minutes finished 12 (6
    a minute on 2 slots), so 140 seconds."""
    drain = drain_estimate(backlog=14, finished=129, recent_finished=12, running=2)

    assert drain.rate_window == RECENT_WINDOW
    assert drain.seconds == pytest.approx(140)
    assert str(drain) == (
        "about 2.3 minutes at the rate of the last 2 minutes "
        "(6 runs/min; 13 runs/min over the last 10 minutes)"
    )


def test_nothing_queued_is_empty_whatever_the_rate():
    for finished in (0, 7):
        drain = drain_estimate(backlog=0, finished=finished, recent_finished=finished)
        assert (drain.state, drain.seconds) == ("empty", None)
        assert str(drain) == "empty: nothing waits"


def test_a_backlog_with_nothing_finished_lately_is_not_draining():
    drain = drain_estimate(backlog=5, finished=0, recent_finished=0, running=1)

    assert (drain.state, drain.seconds) == ("not_draining", None)
    assert str(drain) == "not draining: no run finished in the last 10 minutes (1 running)"


def test_a_recent_window_longer_than_the_window_is_cut_to_it():
    drain = drain_estimate(backlog=10, finished=5, window=timedelta(seconds=30), recent_finished=5)

    assert drain.recent_window == timedelta(seconds=30)
    assert drain.seconds == pytest.approx(60)


@pytest.mark.parametrize(
    ("backlog_", "finished", "words"),
    [
        (1, 600, "about 1 second"),  # 1 a second
        (45, 600, "about 45 seconds"),
        (12, 10, "about 12 minutes"),
        (1000, 40, "about 4.2 hours"),
        (5000, 3, "about 12 days"),
    ],
)
def test_the_estimate_is_said_in_words_a_reader_needs(backlog_, finished, words):
    # One rate: both windows the same 10 minutes.
    drain = drain_estimate(
        backlog=backlog_, finished=finished, recent_finished=finished, recent_window=RATE_WINDOW
    )
    assert str(drain).startswith(words + " at ")


def test_a_slow_rate_is_said_with_a_decimal():
    assert "0.3 runs/min" in str(drain_estimate(backlog=4, finished=3, recent_finished=1))


def test_start_latency_counts_from_creation_or_the_delayed_start_time_asked_for():
    started = T0 + timedelta(seconds=3)
    assert start_latency(created_at=T0, not_before=None, started_at=started) == 3
    # A delayed run waits from its start time; one whose start time had passed, from creation.
    later = T0 + timedelta(seconds=2)
    assert start_latency(created_at=T0, not_before=later, started_at=started) == 1
    earlier = T0 - timedelta(hours=1)
    assert start_latency(created_at=T0, not_before=earlier, started_at=started) == 3
    # Clocks of two machines a little apart never make it negative.
    assert start_latency(created_at=T0, not_before=None, started_at=T0 - timedelta(0, 1)) == 0


# --- A controlled backlog, through the services ---------------------------------------------------


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)


@pytest.mark.django_db
def test_a_controlled_backlog_drains_in_the_time_its_rate_says(make_agent, make_execution, now):
    """60 runs wait; 20 finished in the last 10 minutes (2 a minute), 5 before that: 30
    minutes to drain, exactly (the rule is exact for a given history; the end-to-end test holds
    it to a real worker's drain within a tolerance)."""
    agent = make_agent(queue="ops-q1")
    other = make_agent(queue="ops-q2")
    for i in range(60):
        make_execution(agent, "queued", at=now - timedelta(minutes=40) + timedelta(seconds=i))
    for i in range(20):  # finished 20 s to 9.5 min ago
        make_execution(agent, "succeeded", at=now - timedelta(seconds=20 + 27 * i), seconds=0)
    for _ in range(5):  # outside the rate's window
        make_execution(agent, "failed", at=now - timedelta(minutes=15), seconds=1)
    make_execution(other, "succeeded", at=now - timedelta(minutes=1), seconds=1)

    rows = {r.queue: r for r in backlog.queue_backlog(now=now, queues=["ops-q1", "ops-q2"])}

    a = rows["ops-q1"]
    assert (a.queued, a.running, a.drain.finished) == (60, 0, 20)
    assert a.drain.recent_finished == 4  # 20, 47, 74 and 101 s ago: 2 a minute lately too
    assert a.drain.per_minute == 2
    assert a.drain.seconds == pytest.approx(30 * 60, abs=1e-6)
    assert a.oldest_age == pytest.approx(40 * 60, abs=1e-6)
    assert str(a.drain) == (
        "about 30 minutes at the rate of the last 10 minutes "
        "(2 runs/min; 2 runs/min over the last 2 minutes)"
    )
    b = rows["ops-q2"]
    assert (b.queued, b.drain.state, b.oldest_age) == (0, "empty", None)


@pytest.mark.django_db
def test_a_stall_after_a_burst_is_not_draining_lately(make_agent, make_execution, now):
    """Quick runs finished 3 to 9 minutes ago; two long runs hold the slots since, 25 wait."""
    agent = make_agent(queue="ops-q1")
    for i in range(60):
        make_execution(agent, "succeeded", at=now - timedelta(seconds=180 + 6 * i), seconds=0.1)
    for _ in range(2):
        make_execution(agent, "running", at=now - timedelta(seconds=170))
    for _ in range(25):
        make_execution(agent, "queued", at=now - timedelta(seconds=100))

    [row] = backlog.queue_backlog(now=now, queues=["ops-q1"])

    assert (row.queued, row.running) == (25, 2)
    assert (row.drain.finished, row.drain.recent_finished) == (60, 0)
    assert row.drain.state == "not_draining"
    assert str(row.drain) == (
        "not draining lately: no run finished in the last 2 minutes (2 running)"
    )


@pytest.mark.django_db
def test_a_slow_down_after_a_burst_drains_at_the_recent_rate(make_agent, make_execution, now):
    agent = make_agent(queue="ops-q1")
    for i in range(50):  # quick runs 3 to 8 minutes ago
        make_execution(agent, "succeeded", at=now - timedelta(seconds=180 + 6 * i), seconds=0.1)
    for i in range(4):  # 20 s runs on 2 slots lately: 2 a minute
        make_execution(agent, "succeeded", at=now - timedelta(seconds=40 + 20 * i), seconds=20)
    for _ in range(14):
        make_execution(agent, "queued", at=now - timedelta(seconds=100))

    [row] = backlog.queue_backlog(now=now, queues=["ops-q1"])

    assert (row.drain.finished, row.drain.recent_finished) == (54, 4)
    assert row.drain.rate_window == RECENT_WINDOW
    assert row.drain.seconds == pytest.approx(7 * 60)  # 14 runs at 2 a minute
    assert str(row.drain).startswith("about 7 minutes at the rate of the last 2 minutes")


@pytest.mark.django_db
def test_only_runs_that_could_start_now_are_in_the_backlog(make_agent, make_execution, now):
    agent = make_agent(queue="ops-q3", max_retries=3)
    make_execution(agent, "queued", at=now - timedelta(minutes=3))  # waits for a worker
    make_execution(agent, "retrying", at=now - timedelta(minutes=2), seconds=1)  # retry due
    make_execution(agent, "running", at=now - timedelta(minutes=1))
    # Not waiting for a worker: delayed, held by the overlap policy, retrying later, finished.
    make_execution(agent, "queued", at=now, not_before=now + timedelta(hours=1))
    make_execution(agent, "queued", at=now - timedelta(hours=1), hold=True)
    make_execution(agent, "retrying", at=now + timedelta(seconds=30), seconds=0)
    make_execution(agent, "succeeded", at=now - timedelta(hours=2))

    [row] = backlog.queue_backlog(now=now, queues=["ops-q3"])

    assert (row.queued, row.running) == (2, 1)
    # The oldest is the queued one created 3 minutes ago (the retry was due 2 minutes ago).
    assert row.oldest_age == pytest.approx(180, abs=1e-6)


@pytest.mark.django_db
def test_a_retry_waits_since_it_was_due_and_a_delayed_run_since_its_start_time(
    make_agent, make_execution, now
):
    agent = make_agent(queue="ops-q4")
    make_execution(agent, "retrying", at=now - timedelta(hours=1), seconds=10)
    make_execution(
        agent, "queued", at=now - timedelta(hours=2), not_before=now - timedelta(minutes=1)
    )
    from executions.models import Execution
    from executions.services import execution_publish

    delayed = Execution.objects.get(agent=agent, wait_reason="delayed")
    assert execution_publish(execution=delayed, at=now)  # as the dispatcher does when due

    [row] = backlog.queue_backlog(now=now, queues=["ops-q4"])

    # The retry was due an hour ago less the 10 s of its attempt and its 1 s backoff.
    assert row.queued == 2
    assert row.oldest_age == pytest.approx(3600 - 11, abs=1e-6)


@pytest.mark.django_db
def test_all_queues_together_drain_at_their_rates_added(make_agent, make_execution, now):
    a, b = make_agent(queue="ops-q5"), make_agent(queue="ops-q6")
    for _ in range(6):
        make_execution(a, "queued", at=now - timedelta(minutes=1))
    make_execution(b, "queued", at=now - timedelta(minutes=5))
    for agent in (a, a, b):
        make_execution(agent, "succeeded", at=now - timedelta(minutes=2), seconds=1)

    rows = backlog.queue_backlog(now=now, queues=["ops-q5", "ops-q6"])
    together = backlog.total(rows)

    assert (together.queued, together.drain.finished) == (7, 3)
    assert together.drain.seconds == pytest.approx(7 * RATE_WINDOW.total_seconds() / 3)
    assert together.oldest_age == pytest.approx(300, abs=1e-6)


@pytest.mark.django_db
def test_a_queue_not_asked_for_still_shows_its_waiting_runs(
    make_agent, make_execution, now, settings
):
    agent = make_agent(queue="ops-q7")
    make_execution(agent, "queued", at=now - timedelta(minutes=1))

    rows = backlog.queue_backlog(now=now, queues=[settings.CONVEYOR_EXECUTIONS_QUEUE])

    assert [(r.queue, r.queued) for r in rows] == [
        (settings.CONVEYOR_EXECUTIONS_QUEUE, 0),
        ("ops-q7", 1),
    ]


@pytest.mark.django_db
def test_it_costs_two_queries_whatever_the_backlog(
    make_agent, make_execution, now, django_assert_num_queries
):
    agent = make_agent(queue="ops-q8")
    for i in range(10):
        make_execution(agent, "queued", at=now - timedelta(minutes=i))
        make_execution(agent, "succeeded", at=now - timedelta(minutes=i), seconds=1)

    with django_assert_num_queries(2):
        backlog.queue_backlog(now=now, queues=["ops-q8"])


# --- Samples ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_sample_a_minute_per_queue_and_old_ones_go(make_agent, make_execution, now, settings):
    agent = make_agent(queue="ops-q9")
    make_execution(agent, "queued", at=now - timedelta(seconds=90))
    make_execution(agent, "running", at=now - timedelta(seconds=30))
    old = QueueSample.objects.create(at=now - timedelta(days=8, minutes=1), queue="ops-q9")
    kept = QueueSample.objects.create(at=now - timedelta(days=7), queue="ops-q9")

    backlog.sample(now=now)
    # The same minute (its start: now + 1 s is the next minute when now is at :59): nothing more.
    backlog.sample(now=backlog.floor_minute(now))

    samples = QueueSample.objects.filter(queue="ops-q9", at__gte=now - timedelta(minutes=1))
    [s] = samples
    assert s.at == backlog.floor_minute(now)
    assert (s.queued, s.running) == (1, 1)
    assert s.oldest_age == pytest.approx(90, abs=1)
    assert s.broker is not None  # the suite's Redis answered
    assert QueueSample.objects.filter(queue=settings.CONVEYOR_EXECUTIONS_QUEUE).exists()
    assert not QueueSample.objects.filter(queue=settings.CONVEYOR_MAINTENANCE_QUEUE).exists()
    assert not QueueSample.objects.filter(pk=old.pk).exists()
    assert QueueSample.objects.filter(pk=kept.pk).exists()


@pytest.mark.django_db
def test_sample_series_has_a_point_per_bar_with_the_most_queued_of_its_minutes():
    from django.db.models.functions import TruncHour

    since = T0
    for minute, queued in ((0, 3), (30, 9), (59, 1), (120, 4)):
        QueueSample.objects.create(
            at=since + timedelta(minutes=minute), queue="q", queued=queued, oldest_age=minute
        )
    QueueSample.objects.create(at=since - timedelta(minutes=1), queue="q", queued=100)

    [series] = backlog.sample_series(
        since=since, now=since + timedelta(hours=3, minutes=10), step=timedelta(hours=1),
        trunc=TruncHour,
    )  # fmt: skip

    assert series.queue == "q"
    assert series.queued == [9, None, 4, None]
    assert series.oldest_age == [59, None, 120, None]


def test_the_sampler_is_sent_every_minute_on_the_maintenance_queue(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["conveyor-queue-samples"]
    assert entry["task"] == "ops.tasks.sample_queues"
    assert entry["schedule"] == 60
    assert entry["options"]["queue"] == settings.CONVEYOR_MAINTENANCE_QUEUE
