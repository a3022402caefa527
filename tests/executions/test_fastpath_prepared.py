"""The fast path's statements are prepared on the connection (``CONVEYOR_DB_PREPARE``): each
shape once, then only executed; off, nothing is prepared and the runs are the same.

Postgres's own view of the session's prepared statements is the witness, not psycopg's cache.
"""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.db import connection
from psycopg import _queries as psycopg_queries

from executions import fastpath, runner
from executions.models import Execution
from executions.services import execution_request
from ops.system import queue_keys
from tests.upstream import source_sha256

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the fast path exists on Postgres only"
    ),
]

QUEUE = "nobody-listens"

# How each of a run's three statements starts: its creation, its claim, its successful finish.
SHAPES = ("WITH created AS", "WITH old AS", "WITH done AS")


def prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
        return [statement for (statement,) in cursor.fetchall()]


def run_one(agent) -> Execution:
    execution = execution_request(agent=agent, trigger="api", input={"n": 1})
    runner.run_attempt(execution_id=execution.pk, expected_attempt=0, worker="w@host")
    execution.refresh_from_db()
    return execution


def test_a_runs_statements_are_prepared_once_and_reused(make_agent, settings):
    settings.CONVEYOR_DB_PREPARE = True
    agent = make_agent()
    before = len(prepared())

    first = run_one(agent)
    after_one = prepared()
    assert first.status == Execution.Status.SUCCEEDED
    assert first.result == {"n": 1}
    for shape in SHAPES:
        assert sum(s.startswith(shape) for s in after_one) == 1, (shape, after_one)
    # Server-side parameters: no value of the run is in the prepared text.
    assert all(str(first.uuid) not in s for s in after_one)

    # Two more runs of the same shape prepare nothing new: the statements are reused.
    for _ in range(2):
        assert run_one(agent).status == Execution.Status.SUCCEEDED
    assert len(prepared()) == len(after_one) == before + len(SHAPES)


def test_off_nothing_is_prepared_and_runs_are_the_same(make_agent, settings):
    settings.CONVEYOR_DB_PREPARE = False
    agent = make_agent()
    before = prepared()

    execution = run_one(agent)

    assert execution.status == Execution.Status.SUCCEEDED
    assert execution.result == {"n": 1}
    assert execution.attempts.get().outcome == "succeeded"
    assert list(execution.events.values_list("to_status", flat=True)) == [
        "queued",
        "running",
        "succeeded",
    ]
    assert prepared() == before


@pytest.mark.django_db(False)
def test_the_repeated_convert_matches_the_installed_psycopg():
    """fastpath keeps psycopg's parsing of its long statements, repeating the steps of
    ``PostgresQuery.convert``: a psycopg that changed them needs the repetition checked."""
    assert source_sha256(psycopg_queries.PostgresQuery.convert) == fastpath.PSYCOPG_CONVERT_SHA256


def test_a_statement_is_parsed_once(make_agent, settings):
    settings.CONVEYOR_DB_PREPARE = True
    agent = make_agent()
    run_one(agent)
    parsed = fastpath._parse.cache_info()
    for _ in range(3):
        run_one(agent)
    again = fastpath._parse.cache_info()
    # The three statements of each further run are found, none parsed anew.
    assert again.misses == parsed.misses
    assert again.hits == parsed.hits + 3 * len(SHAPES)


@pytest.fixture
def transaction_commands(monkeypatch):
    """The transaction commands (BEGIN, COMMIT, ...) psycopg sends from here on: each is a round
    trip of its own."""
    from psycopg._connection_base import BaseConnection

    sent = []
    send = BaseConnection._exec_command

    def spy(self, command, *args, **kwargs):
        sent.append(bytes(command).split()[0].decode() if isinstance(command, bytes) else command)
        return send(self, command, *args, **kwargs)

    monkeypatch.setattr(BaseConnection, "_exec_command", spy)
    return sent


@pytest.fixture
def nobody_reads():
    """Messages published here go to a queue no worker reads, emptied afterwards."""
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(*queue_keys(QUEUE))
    client.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("nobody_reads")
def test_a_run_started_outside_a_transaction_is_one_statement_and_no_begin_or_commit(
    make_agent, transaction_commands
):
    """As the API starts a run: the statement that writes the run and its event is atomic by
    itself, so it is sent alone (one round trip, not three)."""
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    agent = make_agent(queue=QUEUE)
    transaction_commands.clear()
    with CaptureQueriesContext(connection) as queries:
        execution = execution_request(agent=agent, trigger="api", input={"n": 1})
    assert [q["sql"].split(" AS")[0] for q in queries.captured_queries] == ["WITH created"]
    assert transaction_commands == []
    assert execution.pk is not None
    assert execution.events.get().to_status == Execution.Status.QUEUED

    # Inside a caller's transaction the run is part of it (the witness sees BEGIN and COMMIT).
    with transaction.atomic():
        inside = execution_request(agent=agent, trigger="api", input={"n": 2})
    assert transaction_commands == ["BEGIN", "COMMIT"]
    assert Execution.objects.filter(pk=inside.pk).exists()
