"""agent_delete: an agent goes with its runs and schedules, never while a run is in progress."""

from __future__ import annotations

import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction

from agents.models import Agent, Schedule
from agents.services import AgentBusy, agent_delete, agent_delete_preview
from executions.models import Execution, ExecutionAttempt, ExecutionLog
from executions.services import execution_request

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("status", ["queued", "running", "retrying"])
def test_an_agent_with_a_run_in_progress_is_not_deleted(make_agent, status, make_execution):
    agent = make_agent(name="busy-one")
    make_execution(agent, "succeeded")
    make_execution(agent, status)

    with pytest.raises(AgentBusy) as refused:
        agent_delete(agent=agent)

    assert refused.value.code == "agent_busy"
    assert refused.value.message == (
        "“busy-one” has 1 run in progress (queued, running or retrying): cancel them, or wait "
        "for them to finish, before deleting it."
    )
    assert Agent.objects.filter(pk=agent.pk).exists()
    assert Execution.objects.filter(agent=agent).count() == 2


def test_the_refusal_counts_the_runs_in_progress(make_agent, make_execution):
    agent = make_agent()
    for status in ("queued", "running", "retrying"):
        make_execution(agent, status)

    with pytest.raises(AgentBusy, match="has 3 runs in progress"):
        agent_delete(agent=agent)


def test_an_agent_with_finished_runs_goes_with_its_runs_and_schedules(make_agent, make_execution):
    agent = make_agent()
    for status in ("succeeded", "failed", "cancelled"):
        make_execution(agent, status)
    Schedule.objects.create(agent=agent, kind="interval", interval_seconds=3600)
    other = make_agent()
    kept = make_execution(other, "failed")  # one attempt, one log line

    agent_delete(agent=agent)

    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not Execution.objects.filter(agent_id=agent.pk).exists()
    assert not Schedule.objects.filter(agent_id=agent.pk).exists()
    assert list(ExecutionAttempt.objects.values_list("execution_id", flat=True)) == [kept.pk]
    assert list(ExecutionLog.objects.values_list("execution_id", flat=True)) == [kept.pk]
    assert Agent.objects.filter(pk=other.pk).exists()


def test_an_agent_without_runs_is_deleted(make_agent):
    agent = make_agent()
    agent_delete(agent=agent)
    assert not Agent.objects.filter(pk=agent.pk).exists()


def test_deleting_an_agent_already_deleted_does_nothing(make_agent):
    agent = make_agent()
    Agent.objects.filter(pk=agent.pk).delete()
    agent_delete(agent=agent)  # no error


def test_the_preview_says_what_goes_with_the_agent_and_what_stands_in_the_way(
    make_agent, make_execution
):
    agent = make_agent()
    for status in ("succeeded", "failed", "running", "queued"):
        make_execution(agent, status)
    Schedule.objects.create(agent=agent, kind="interval", interval_seconds=3600)

    going = agent_delete_preview(agent=agent)

    assert (going.executions, going.schedules, going.in_progress) == (4, 1, 2)


@pytest.mark.django_db(transaction=True)
def test_a_run_started_while_its_agent_is_deleted_does_not_outlive_it(make_agent):
    """Postgres: the run's transaction is open when the agent goes; its commit then fails."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks and deferred foreign keys: Postgres only")
    agent = make_agent()
    inserted, deleted = threading.Event(), threading.Event()
    outcome = {}

    def start_a_run():
        try:
            with transaction.atomic():
                execution_request(agent=agent, trigger="api")
                inserted.set()
                deleted.wait(10)
        except IntegrityError:
            outcome["run"] = "refused"
        else:
            outcome["run"] = "committed"
        finally:
            connections.close_all()

    starter = threading.Thread(target=start_a_run)
    starter.start()
    assert inserted.wait(10)
    agent_delete(agent=agent)  # does not see the uncommitted run
    deleted.set()
    starter.join(10)

    assert outcome == {"run": "refused"}
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert not Execution.objects.exists()


def test_an_agent_that_a_flow_runs_is_not_deleted_until_the_flow_stops_using_it(make_agent):
    step = make_agent(name="fetch")
    flow = make_agent(name="daily", kind="flow", config={"steps": [{"key": "a", "agent": "fetch"}]})
    make_agent(name="other-flow", kind="flow", config={"steps": [{"key": "b", "agent": "daily"}]})

    with pytest.raises(AgentBusy) as refused:
        agent_delete(agent=step)

    assert refused.value.message == (
        "“fetch” is a step of flow “daily”: remove that step (or the flow) first."
    )
    assert Agent.objects.filter(pk=step.pk).exists()
    flow.delete()  # (the flow "daily" is itself a step of other-flow: deleted directly here)
    agent_delete(agent=step)
    assert not Agent.objects.filter(pk=step.pk).exists()
