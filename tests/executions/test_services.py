"""Services without a worker: creation, idempotency, transitions, cancel and retry."""

import pytest
from django.core.management import call_command
from django.utils import timezone

from executions.models import Execution
from executions.services import (
    ExecutionRefused,
    execution_cancel,
    execution_request,
    execution_retry,
    transition,
)

pytestmark = pytest.mark.django_db


def test_creating_an_execution_queues_it_and_enqueues_only_on_commit(
    make_agent, django_capture_on_commit_callbacks
):
    agent = make_agent(max_retries=4)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        execution = execution_request(agent=agent, trigger="api", input={"a": 1})
    assert len(callbacks) == 1
    assert execution.status == "queued" and execution.owner == agent.owner
    assert execution.max_attempts == 5 and execution.attempt == 0
    assert execution.celery_task_id
    assert list(execution.events.values_list("from_status", "to_status")) == [("", "queued")]


def test_the_same_idempotency_key_twice_gives_one_execution(
    make_agent, django_capture_on_commit_callbacks
):
    agent = make_agent()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = execution_request(agent=agent, trigger="api", input={}, idempotency_key="k-1")
        second = execution_request(agent=agent, trigger="api", input={}, idempotency_key="k-1")
    assert first.pk == second.pk
    assert (first.is_replay, second.is_replay) == (False, True)
    assert Execution.objects.filter(agent=agent).count() == 1
    assert len(callbacks) == 1  # the replay queues nothing


def test_idempotency_keys_are_per_agent(make_agent):
    a, b = make_agent(), make_agent()
    assert execution_request(agent=a, trigger="api", idempotency_key="same").agent == a
    assert execution_request(agent=b, trigger="api", idempotency_key="same").agent == b


def test_a_paused_agent_refuses_new_runs(make_agent):
    agent = make_agent(is_paused=True)
    with pytest.raises(ExecutionRefused, match="paused"):
        execution_request(agent=agent, trigger="manual")


def test_a_delayed_run_waits_in_the_database(make_agent, django_capture_on_commit_callbacks):
    agent = make_agent()
    later = timezone.now() + timezone.timedelta(hours=3)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        execution = execution_request(agent=agent, trigger="api", not_before=later)
    assert execution.not_before == later and callbacks == []


def test_a_transition_loses_when_the_row_moved_on(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    stale = Execution.objects.get(pk=execution.pk)
    now = timezone.now()
    assert transition(execution, to="running", at=now, attempt=1)
    # The stale copy still believes the execution is queued: its compare-and-set loses.
    assert not transition(stale, to="running", at=now, attempt=1)
    assert not transition(stale, to="cancelled", at=now)
    assert execution.events.count() == 2


def test_a_transition_the_state_machine_forbids_does_nothing(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    assert not transition(execution, to="succeeded", at=timezone.now())
    execution.refresh_from_db()
    assert execution.status == "queued"


def test_a_queued_execution_is_cancelled_at_once(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    assert execution_cancel(execution=execution, by="alice")
    execution.refresh_from_db()
    assert execution.status == "cancelled" and execution.finished_at
    assert execution.error_category == "cancelled"


def test_a_finished_execution_cannot_be_cancelled(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    execution_cancel(execution=execution)
    with pytest.raises(ExecutionRefused, match="already finished"):
        execution_cancel(execution=execution)


def test_a_cancel_on_a_stale_copy_follows_the_row(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    stale = Execution.objects.get(pk=execution.pk)
    transition(execution, to="running", at=timezone.now(), attempt=1)
    assert execution_cancel(execution=stale)
    assert list(stale.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "cancelled",
    ]


def test_a_manual_retry_creates_a_new_execution_and_leaves_the_original(make_agent):
    original = execution_request(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=original)
    before = Execution.objects.filter(pk=original.pk).values().get()

    same_input = execution_retry(execution=original, by="alice")

    assert Execution.objects.filter(pk=original.pk).values().get() == before
    assert same_input.retry_of == original and same_input.trigger == "retry"
    assert same_input.input == {"v": 1} and same_input.status == "queued"


def test_a_retry_can_take_a_new_input(make_agent):
    original = execution_request(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=original)

    assert execution_retry(execution=original, input={"v": 2}).input == {"v": 2}


def test_an_execution_is_retried_once_and_the_refusal_points_to_the_retry(make_agent):
    original = execution_request(agent=make_agent(), trigger="manual", input={"v": 1})
    execution_cancel(execution=original)
    first = execution_retry(execution=original)

    for again in ({}, {"input": {"v": 2}}):
        with pytest.raises(ExecutionRefused, match=str(first.uuid)) as refused:
            execution_retry(execution=original, **again)
        assert refused.value.code == "already_retried" and refused.value.existing == first
    assert original.retried_as.count() == 1


def test_only_failed_or_cancelled_executions_can_be_retried(make_agent):
    execution = execution_request(agent=make_agent(), trigger="manual")
    with pytest.raises(ExecutionRefused, match="Only failed or cancelled"):
        execution_retry(execution=execution)


def test_migrations_match_the_models():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_a_run_requested_for_an_agent_deleted_meanwhile_is_refused_in_words(make_agent):
    from agents.models import Agent
    from agents.services import agent_delete

    agent = make_agent(name="nightly")
    read_before = Agent.objects.get(pk=agent.pk)  # what a page or API request holds
    agent_delete(agent=agent)

    with pytest.raises(ExecutionRefused) as refused:
        execution_request(agent=read_before, trigger="api")

    assert refused.value.code == "agent_deleted"
    assert refused.value.message == "The agent “nightly” was deleted; nothing was started."
    assert not Execution.objects.exists()
