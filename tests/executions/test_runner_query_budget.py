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
