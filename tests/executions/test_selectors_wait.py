"""Why a run waits, in words (``executions.selectors.explain_wait``): every wait reason has its
explanation, built from what the services recorded and the state of what the run waits for.

No worker runs here: the runs are made through the services (``make_execution``) and, where a
worker's claim would record a wait on a limit, the test records it as the claim does (a
compare-and-set of ``wait_reason``, ``wait_until`` and ``waits_on``) and writes the limit's
``Limiter`` row as ``executions.capacity`` keeps it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from executions.models import Execution, FlowStep, Limiter
from executions.selectors import WAIT_EXPLANATIONS, explain_wait
from ops import presence
from tests.conftest import flow_started, step_ended

pytestmark = pytest.mark.django_db

WaitReason = Execution.WaitReason


def waits(execution: Execution, reason: str, *, on: str = "", until=None) -> Execution:
    """Record a wait as the claim over a limit records it (executions.capacity._wait)."""
    Execution.objects.filter(pk=execution.pk).update(
        wait_reason=reason, wait_until=until, waits_on=on
    )
    execution.refresh_from_db()
    return execution


def breaker(key: str, **state) -> Limiter:
    """The limit's row as executions.capacity keeps it (a claim may have made it already)."""
    return Limiter.objects.update_or_create(key=key, defaults=state)[0]


def agent_key(agent) -> str:
    return f"agent:{agent.uuid}"


@pytest.fixture
def lonely_queue(settings):
    """A queue declared in the settings that no worker reads (what tests announce is gone
    after each)."""
    name = "lonely"
    settings.CONVEYOR_QUEUES = {**settings.CONVEYOR_QUEUES, name: {"concurrency": None}}
    forget = presence._reader(settings.REDIS_URL).delete
    forget(presence.presence_key(name))
    yield name
    forget(presence.presence_key(name))


# --- One scenario per reason: a run waiting for it, and what its explanation must say -------


def delayed(make_agent, make_execution, **_):
    start = timezone.now() + timedelta(minutes=20)
    run = make_execution(make_agent(), "queued", not_before=start)
    return run, ["Delayed until its start time", "It starts at"]


def held(make_agent, make_execution, **_):
    agent = make_agent(overlap_policy="queue")
    earlier = make_execution(agent, "running")
    run = make_execution(agent, "queued", hold=True)
    return run, ["Waiting for the agent's earlier run to finish", str(earlier.uuid)]


def broker(make_agent, make_execution, lonely_queue, **_):
    presence.announce(worker="w1@test", queues=[lonely_queue])
    run = make_execution(make_agent(queue=lonely_queue), "queued")
    return run, [f"Waiting for a worker on queue “{lonely_queue}”", "1 worker is online"]


def backoff(make_agent, make_execution, **_):
    run = make_execution(make_agent(max_retries=3, retry_backoff=60), "retrying", ago=timedelta(0))
    return run, ["Waiting to retry: attempt 1 of 4 failed", "Attempt 2 of 4", "It is retried at"]


def steps(make_agent, **_):
    make_agent(name="Echo")
    flow = flow_started(
        make_agent(kind="flow", config={"steps": [{"key": "fetch", "agent": "Echo"}]})
    )
    child = FlowStep.objects.get(flow=flow, key="fetch").execution
    return flow, ["Waiting for its current step, “fetch”", str(child.uuid)]


def pause(make_agent, **_):
    make_agent(name="Echo")
    config = {"steps": [{"key": "fetch", "agent": "Echo"}, {"wait": {"seconds": 90}}]}
    flow = flow_started(make_agent(kind="flow", config=config))
    step_ended(flow, "fetch", result={"ok": True})
    return flow, ["Waiting before its next step", "It goes on at"]


def slot(make_agent, make_execution, **_):
    agent = make_agent(max_concurrency=2)
    holding = [make_execution(agent, "running") for _ in range(2)]
    run = waits(make_execution(agent, "queued"), WaitReason.SLOT, on=agent_key(agent))
    return run, ["Waiting for a slot: 2 of 2 busy", *(str(r.uuid) for r in holding)]


def rate(make_agent, make_execution, **_):
    agent = make_agent(rate_limit="5/min")
    until = timezone.now() + timedelta(seconds=40)
    run = waits(make_execution(agent, "queued"), WaitReason.RATE, on=agent_key(agent), until=until)
    return run, [f"Rate limited: at most 5 starts a minute for the agent “{agent.name}”"]


def circuit(make_agent, make_execution, **_):
    agent = make_agent(breaker_threshold=3)
    probe_at = timezone.now() + timedelta(minutes=2)
    breaker(
        agent_key(agent),
        state=Limiter.State.OPEN,
        failures=3,
        last_failure="The service answered 503 Service Unavailable.",
        opened_at=timezone.now(),
        probe_at=probe_at,
        cooldown=120,
    )
    run = waits(
        make_execution(agent, "queued"), WaitReason.CIRCUIT, on=agent_key(agent), until=probe_at
    )
    # Said once, quoted without a stray full stop after the quote.
    return run, [
        "after 3 failures in a row",
        "“The service answered 503 Service Unavailable.”",
        "Next probe at",
    ]


def paused(make_agent, make_execution, **_):
    agent = make_agent()
    run = make_execution(agent, "queued")
    agent.is_paused = True
    agent.save(update_fields=["is_paused"])
    run = waits(run, WaitReason.PAUSED, on=agent_key(agent))
    return run, [f"The agent “{agent.name}” is paused", "when the agent is resumed"]


SCENARIOS = {
    WaitReason.DELAYED: delayed,
    WaitReason.HELD: held,
    WaitReason.BROKER: broker,
    WaitReason.BACKOFF: backoff,
    WaitReason.STEPS: steps,
    WaitReason.PAUSE: pause,
    WaitReason.SLOT: slot,
    WaitReason.RATE: rate,
    WaitReason.CIRCUIT: circuit,
    WaitReason.PAUSED: paused,
}


@pytest.mark.parametrize("reason", [r for r in WaitReason.values if r])
def test_every_wait_reason_is_explained_in_words(reason, make_agent, make_execution, lonely_queue):
    assert reason in SCENARIOS, f"no scenario for the wait reason {reason!r}: add one"
    assert reason in WAIT_EXPLANATIONS, f"the wait reason {reason!r} has no explanation"
    run, expected = SCENARIOS[reason](
        make_agent=make_agent, make_execution=make_execution, lonely_queue=lonely_queue
    )
    assert run.wait_reason == reason

    wait = explain_wait(run)

    assert wait is not None and wait.reason == reason
    text = " ".join([wait.message, *wait.holding])
    for words in expected:
        assert words in text, f"{words!r} not in {text!r}"
    # Whole sentences: the headline, then what it means and what happens next; nothing said
    # twice, no full stop after a quote that ends with one.
    assert wait.detail and wait.message.startswith(wait.title) and wait.message.endswith(".")
    assert wait.message.count("failures in a row") <= 1
    assert ".”." not in wait.message
    if run.wait_until is not None:
        assert wait.until == run.wait_until


def test_a_run_that_does_not_wait_has_no_explanation(make_agent, make_execution):
    agent = make_agent()
    assert explain_wait(make_execution(agent, "running")) is None
    assert explain_wait(make_execution(agent, "succeeded")) is None


# --- Waiting for a worker ---------------------------------------------------------------------


def test_no_worker_online_for_its_queue_is_said_plainly(make_agent, make_execution, lonely_queue):
    run = make_execution(make_agent(queue=lonely_queue), "queued")

    wait = explain_wait(run)

    assert wait.reason == WaitReason.BROKER and wait.worker_online is False
    assert wait.label == "No worker online for its queue"
    assert f"No worker online for its queue “{lonely_queue}”" in wait.message
    assert f"-Q {lonely_queue}" in wait.message


def test_a_worker_gone_quiet_no_longer_counts(make_agent, make_execution, lonely_queue):
    long_ago = timezone.now().timestamp() - presence.TTL - 1
    presence.announce(worker="w1@test", queues=[lonely_queue], now=long_ago)
    run = make_execution(make_agent(queue=lonely_queue), "queued")

    assert explain_wait(run).worker_online is False

    presence.announce(worker="w2@test", queues=[lonely_queue])
    assert explain_wait(run).worker_online is True


# --- Limits ---------------------------------------------------------------------------------


def test_a_queue_limit_names_the_queue_and_shows_only_the_owners_runs(
    make_agent, make_execution, settings, bob
):
    settings.CONVEYOR_QUEUES = {
        **settings.CONVEYOR_QUEUES,
        "reports": {"description": "Nightly reports", "concurrency": 2},
    }
    mine = make_execution(make_agent(queue="reports"), "running")
    make_execution(make_agent(bob, queue="reports"), "running")  # bob's: counted, not shown
    run = waits(
        make_execution(make_agent(queue="reports"), "queued"), WaitReason.SLOT, on="queue:reports"
    )

    wait = explain_wait(run)

    assert "Waiting for a slot: 2 of 2 busy on the queue “reports”" in wait.message
    assert "Another user's run holds a slot." in wait.message
    assert wait.holding == [str(mine.uuid)]


def test_runs_waiting_before_it_for_the_same_slot_are_counted(make_agent, make_execution):
    agent = make_agent(max_concurrency=1)
    make_execution(agent, "running")
    first = waits(make_execution(agent, "queued"), WaitReason.SLOT, on=agent_key(agent))
    second = waits(make_execution(agent, "queued", ago=timedelta(0)), "slot", on=agent_key(agent))

    assert "wait before it" not in explain_wait(first).message
    assert "1 run waits before it." in explain_wait(second).message


def test_a_limit_lifted_since_says_the_run_goes_soon(make_agent, make_execution):
    agent = make_agent()  # no limit any more
    run = waits(make_execution(agent, "queued"), WaitReason.SLOT, on=agent_key(agent))

    assert "That limit has been lifted since" in explain_wait(run).message


def test_a_half_open_breaker_says_a_probe_is_under_way(make_agent, make_execution):
    agent = make_agent(breaker_threshold=2)
    probe = make_execution(agent, "running")
    breaker(
        agent_key(agent),
        state=Limiter.State.HALF_OPEN,
        failures=2,
        opened_at=timezone.now(),
        probe_execution=probe.pk,
    )
    run = waits(make_execution(agent, "queued"), WaitReason.CIRCUIT, on=agent_key(agent))

    wait = explain_wait(run)

    assert "a probe run is under way" in wait.message and wait.until is None
    assert wait.holding == [str(probe.uuid)]


def test_a_destination_breaker_names_the_host(make_agent, make_execution, settings):
    from executions.capacity import forget_destinations
    from executions.models import Destination

    settings.CONVEYOR_OUTBOUND_ALLOW = ["api.example.com"]
    Destination.objects.create(host="api.example.com", breaker_threshold=5)
    forget_destinations()
    agent = make_agent(kind="http", config={"url": "https://api.example.com/v1/items"})
    breaker(
        "host:api.example.com",
        state=Limiter.State.OPEN,
        failures=5,
        opened_at=timezone.now(),
        probe_at=timezone.now() + timedelta(minutes=1),
    )
    run = waits(make_execution(agent, "queued"), WaitReason.CIRCUIT, on="host:api.example.com")

    wait = explain_wait(run)
    forget_destinations()

    assert "Circuit open for api.example.com after 5 failures in a row" in wait.message
    assert wait.waits_on == "host:api.example.com"
