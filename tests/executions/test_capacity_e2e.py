"""Limits through real workers, the broker and the database: a concurrency limit held across
worker processes (and freed when a worker dies), a rate limit shared by two agents calling one
host, and a circuit breaker that opens on a failing endpoint and closes after a probe."""

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from django.utils import timezone
from werkzeug import Response

from executions import capacity
from executions.models import Destination, Execution, ExecutionLog, Limiter
from executions.recovery import reap_lost_attempts
from executions.services import execution_request
from tests.agents.conftest import local_url
from tests.conftest import wait_for
from tests.executions.test_recovery_e2e import killed_mid_run

WaitReason = Execution.WaitReason


@pytest.fixture
def allow_local():
    """The operator allows the test server's address, like the test worker does."""
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.1"]):
        yield


class RunningSampler(threading.Thread):
    """Counts the agent's running executions every 20 ms, in a thread of its own."""

    def __init__(self, agent):
        super().__init__(daemon=True)
        self.agent = agent
        self.most = 0
        self.waiting_reasons: set[str] = set()
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.is_set():
                rows = Execution.objects.filter(agent=self.agent)
                self.most = max(self.most, rows.filter(status="running").count())
                self.waiting_reasons |= set(
                    rows.filter(status="queued").values_list("wait_reason", flat=True)
                )
                time.sleep(0.02)
        finally:
            connections.close_all()

    def stop(self):
        self.stopped.set()
        self.join(timeout=5)


def test_twenty_runs_limited_to_two_across_worker_processes(worker, private_worker, make_agent):
    # The session's worker (2 processes) and a private one (1) read the queue: 3 could run.
    private_worker(settings.CONVEYOR_EXECUTIONS_QUEUE)
    agent = make_agent(config={"function": "demo.slow"}, max_concurrency=2)
    sampler = RunningSampler(agent)
    sampler.start()
    try:
        runs = [
            execution_request(agent=agent, trigger="api", input={"seconds": 0.3, "steps": 1})
            for _ in range(20)
        ]
        for run in runs:
            wait_for(run, "succeeded", "failed", timeout=60)
    finally:
        sampler.stop()

    assert [run.status for run in runs] == ["succeeded"] * 20
    assert sampler.most <= 2, f"{sampler.most} ran at once"
    assert WaitReason.SLOT in sampler.waiting_reasons
    # Every run that waited was told why, with the limit in use.
    told = ExecutionLog.objects.filter(
        execution__agent=agent, message__startswith="Waiting for a slot: 2 of 2 busy"
    )
    waited = Execution.objects.filter(agent=agent, events__data__wait_reason=WaitReason.SLOT)
    assert told.exists() or waited.exists()
    # Each run made exactly one attempt: waiting lost or duplicated nothing.
    assert all(run.attempts.count() == 1 for run in runs)


def test_a_slot_held_by_a_killed_worker_is_freed_by_recovery(private_worker, make_agent):
    holder = killed_mid_run(private_worker, make_agent, max_retries=0, max_concurrency=1)
    agent = holder.agent
    agent.refresh_from_db()
    waiting = execution_request(agent=agent, trigger="api", input={"seconds": 0.1, "steps": 1})
    assert (waiting.wait_reason, waiting.waits_on) == (WaitReason.SLOT, capacity.agent_key(agent))
    time.sleep(1)
    waiting.refresh_from_db()
    assert waiting.status == "queued", "the dead worker still holds the only slot"

    silent = holder.heartbeat_at + timedelta(seconds=settings.CONVEYOR_HEARTBEAT_TIMEOUT + 1)
    assert reap_lost_attempts(at=silent) == 1

    wait_for(waiting, "succeeded", "failed", timeout=30)
    assert waiting.status == "succeeded"
    holder.refresh_from_db()
    assert (holder.status, holder.error_category) == ("failed", "worker_lost")


@pytest.mark.usefixtures("allow_local")
def test_a_destination_rate_limit_spaces_the_starts_of_two_agents(
    worker, beat, make_agent, httpserver
):
    beat()  # the tick lets rate-limited runs go when their time comes
    httpserver.expect_request("/limited").respond_with_data("ok")
    Destination.objects.create(host="127.0.0.1", rate_limit="2/sec")
    capacity.forget_destinations()
    agents = [
        make_agent(kind="http", config={"url": local_url(httpserver, "/limited")}) for _ in range(2)
    ]
    runs = [execution_request(agent=agents[n % 2], trigger="api", input={}) for n in range(6)]
    for run in runs:
        wait_for(run, "succeeded", "failed", timeout=60)
    assert [run.status for run in runs] == ["succeeded"] * 6
    starts = sorted(run.started_at for run in runs)
    # At most 2 starts in any second: the third start after a given one is >= 1 s later.
    gaps = [(starts[i + 2] - starts[i]).total_seconds() for i in range(len(starts) - 2)]
    assert min(gaps) >= 1.0, gaps
    assert Execution.objects.filter(pk__in=[r.pk for r in runs], events__isnull=False).exists()
    assert ExecutionLog.objects.filter(
        execution__in=runs, message__startswith="Waiting for the rate limit of 127.0.0.1"
    ).exists()


@pytest.mark.usefixtures("allow_local")
def test_a_breaker_opens_on_503s_probes_and_lets_waiting_runs_succeed(
    worker, beat, make_agent, httpserver
):
    beat()
    answer = {"status": 503}
    httpserver.expect_request("/api").respond_with_handler(
        lambda request: Response("busy" if answer["status"] == 503 else "ok", answer["status"])
    )
    agent = make_agent(
        kind="http",
        config={"url": local_url(httpserver, "/api")},
        max_retries=0,
        breaker_threshold=3,
        breaker_cooldown=2,
    )
    key = capacity.agent_key(agent)
    failed = [execution_request(agent=agent, trigger="api", input={}) for _ in range(3)]
    for run in failed:
        wait_for(run, "failed", "succeeded")
    deadline = time.monotonic() + 10
    while not Limiter.objects.filter(key=key, state="open").exists():
        assert time.monotonic() < deadline, "the breaker did not open"
        time.sleep(0.05)
    calls_when_open = len(httpserver.log)

    waiting = [execution_request(agent=agent, trigger="api", input={}) for _ in range(3)]
    deadline = time.monotonic() + 10
    for run in waiting:
        while run.wait_reason != WaitReason.CIRCUIT:
            assert time.monotonic() < deadline, f"{run} does not wait for the breaker"
            time.sleep(0.05)
            run.refresh_from_db()
    assert run.wait_until is not None  # the next probe's time
    assert len(httpserver.log) == calls_when_open  # nothing was sent while it is open

    answer["status"] = 200  # the endpoint recovers; after the cool-down one probe goes
    for run in waiting:
        wait_for(run, "succeeded", "failed", timeout=30)
    assert [run.status for run in waiting] == ["succeeded"] * 3
    limiter = Limiter.objects.get(key=key)
    assert (limiter.state, limiter.failures) == ("closed", 0)
    probe_started = min(run.started_at for run in waiting)
    assert probe_started >= timezone.now() - timedelta(minutes=1)
