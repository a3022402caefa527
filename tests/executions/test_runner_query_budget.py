"""The engine's cost is round trips to the database: keep them few (see bench/README.md)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import runner
from executions.services import execution_request

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_attempt_that_succeeds_takes_a_fixed_handful_of_statements(make_agent):
    # Committed (the fast path runs in autocommit) but out of every worker's reach: a queue
    # nobody consumes and a start a day away, so only this test runs the attempt.
    agent = make_agent(queue="nobody-listens")
    execution = execution_request(
        agent=agent,
        trigger="manual",
        input={"x": 1},
        not_before=timezone.now() + timedelta(days=1),
    )

    with CaptureQueriesContext(connection) as queries:
        runner.run_attempt(execution_id=execution.pk, expected_attempt=0)

    execution.refresh_from_db()
    assert execution.status == "succeeded"
    assert execution.logs.count() == 1 and execution.events.count() == 3
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    if connection.vendor == "postgresql":
        # Claim (one statement), the agent, finish with event, attempt and logs (one statement).
        assert len(statements) == 3, statements
    else:
        # SQLite, the ORM path: claim (read, compare-and-set, event, attempt) and finish
        # (compare-and-set, event, attempt, logs), each in one transaction, no savepoints.
        assert "SAVEPOINT" not in statements
        assert statements.count("BEGIN") == 2 and len(statements) == 12, statements


def _waiting_run(agent, input):
    return execution_request(
        agent=agent,
        trigger="manual",
        input=input,
        not_before=timezone.now() + timedelta(days=1),
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is Postgres'")
def test_a_worker_reads_an_agent_once_and_again_only_when_it_changed(make_agent):
    from agents.services import agent_pause, agent_resume, agent_update
    from executions import fastpath

    fastpath.forget_agents()
    agent = make_agent(queue="nobody-listens", config={"function": "demo.echo"})
    first, second = _waiting_run(agent, 1), _waiting_run(agent, 2)
    runner.run_attempt(execution_id=first.pk, expected_attempt=0, agent_id=agent.pk)

    with CaptureQueriesContext(connection) as queries:
        runner.run_attempt(execution_id=second.pk, expected_attempt=0, agent_id=agent.pk)

    # The claim (checking the kept agent's version) and the finish: the agent is not read.
    assert len(queries.captured_queries) == 2, [q["sql"][:80] for q in queries]
    assert fastpath.kept_agent(agent.pk).version == agent.version

    # A change of the agent (a save, a pause and resume) is a new version: the next claim finds
    # the kept one stale, reads the agent again and runs with what the row says now.
    agent_update(agent=agent, config={"function": "demo.flaky"})
    agent_pause(agent=agent)
    agent_resume(agent=agent)
    agent.refresh_from_db()
    assert agent.version == fastpath.kept_agent(agent.pk).version + 3
    third = _waiting_run(agent, {"fail_times": 0})
    runner.run_attempt(execution_id=third.pk, expected_attempt=0, agent_id=agent.pk)
    third.refresh_from_db()
    assert third.status == "succeeded"
    assert third.result == {"succeeded_on_attempt": 1}  # demo.flaky's answer, not demo.echo's
    assert fastpath.kept_agent(agent.pk).version == agent.version


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the fast path is Postgres'")
def test_a_kept_agent_that_has_limits_now_is_claimed_through_them(make_agent):
    from agents.services import agent_update
    from executions import fastpath

    fastpath.forget_agents()
    agent = make_agent(queue="nobody-listens")
    first, second = _waiting_run(agent, 1), _waiting_run(agent, 2)
    runner.run_attempt(execution_id=first.pk, expected_attempt=0, agent_id=agent.pk)
    agent_update(agent=agent, is_paused=True)

    runner.run_attempt(execution_id=second.pk, expected_attempt=0, agent_id=agent.pk)

    second.refresh_from_db()
    assert (second.status, second.wait_reason) == ("queued", "paused")
    assert fastpath.kept_agent(agent.pk).is_paused is False  # kept, but not used: stale


def test_an_agents_version_rises_at_every_write(make_agent):
    from agents.services import agent_pause, agent_resume

    agent = make_agent()
    assert agent.version == 1
    agent.description = "changed"
    agent.save(update_fields=["description"])
    assert agent.version == 2
    agent_pause(agent=agent)
    agent_resume(agent=agent)
    agent.refresh_from_db()
    assert agent.version == 4
