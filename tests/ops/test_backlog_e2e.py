"""The backlog with the real worker: the beat entry's task samples what waits in each queue, and
the time to drain a controlled backlog is what a real worker then takes to drain it."""

from __future__ import annotations

import time

import pytest
from django.db import transaction
from django.db.models import Max, Min
from django.utils import timezone

from executions.models import Execution
from executions.services import execution_request
from ops import backlog, tasks
from ops.models import QueueSample

#: How far the estimate may be from the time the worker took (the rate a backlog drains at
#: varies with the machine's load; the tests of ops.backlog hold the rule itself exactly).
TOLERANCE = 0.25


def wait_until(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_worker_samples_what_waits_in_each_queue(worker, make_agent, settings):
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-nobody-listens"
    agent = make_agent(queue=queue)
    for _ in range(3):
        execution_request(agent=agent, trigger="api")

    tasks.sample_queues.delay()  # what beat sends every minute, on the maintenance queue

    sample = wait_until(
        lambda: QueueSample.objects.filter(queue=queue).first(), timeout=30, what="a sample"
    )
    assert sample.queued == 3
    assert sample.running == 0
    assert sample.oldest_age is not None and 0 <= sample.oldest_age < 30
    assert sample.broker is not None and sample.broker >= 3  # the messages wait in Redis
    assert sample.at == backlog.floor_minute(sample.at)
    assert QueueSample.objects.filter(queue=settings.CONVEYOR_EXECUTIONS_QUEUE).exists()


@pytest.mark.slow
def test_a_real_worker_drains_a_backlog_in_the_time_the_estimate_says(private_worker, make_agent):
    """20 runs of 0.8 s on one worker process: once 8 have finished, the estimate from the
    rate so far is held to the time the rest then take to leave the backlog. Each run is
    mostly its sleep, so a machine busy with other work changes the rate little (with runs of
    0.3 s, the worker's own time per run, which load stretches, was a third of it)."""
    queue = "ops-fast"
    private_worker(queue)
    agent = make_agent(queue=queue, config={"function": "demo.slow"})
    with transaction.atomic():
        for _ in range(20):
            execution_request(agent=agent, trigger="api", input={"seconds": 0.8, "steps": 1})
    runs = Execution.objects.filter(agent=agent)
    wait_until(lambda: runs.filter(status="succeeded").count() >= 8, timeout=60, what="8 runs")

    now = timezone.now()
    first_start = runs.aggregate(first=Min("started_at"))["first"]
    [row] = backlog.queue_backlog(now=now, queues=[queue], window=now - first_start)
    assert row.drain.state == "draining", row.drain
    assert row.queued >= 8 and row.running <= 1

    wait_until(
        lambda: not runs.filter(status="queued").exists(), timeout=60, what="the backlog to drain"
    )
    emptied = runs.aggregate(last=Max("started_at"))["last"]
    took = (emptied - now).total_seconds()
    per_run = (now - first_start).total_seconds() / row.drain.finished
    print(f"estimate {row.drain.seconds:.2f} s, took {took:.2f} s ({row.drain})")
    assert row.drain.seconds == pytest.approx(took, rel=TOLERANCE, abs=per_run)
