"""Workers outlive their database connections: after every connection of the workers is cut (as a
Postgres restart cuts them), runs and dispatcher ticks go on without restarting the worker, and
the run that met the dead connection is sent again rather than lost. Postgres only (SQLite has no
server to lose)."""

import time

import pytest
from django.db import connection
from django.utils import timezone

from executions.models import Execution
from executions.services import execution_request
from tests.conftest import wait_for
from tests.stack import WORKER_LOG

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs a Postgres server whose connections can be cut"
)


def cut_every_other_connection() -> int:
    """What a restart does to the workers: their server side goes away (Postgres's own admin
    command for it). Returns how many connections were cut."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_runs_after_the_connections_were_cut_succeed_without_a_worker_restart(worker, make_agent):
    agent = make_agent(config={"function": "demo.echo"})
    # Both pool children hold a connection from this run.
    warm = [execution_request(agent=agent, trigger="api", input={"n": n}) for n in range(4)]
    for execution in warm:
        wait_for(execution, "succeeded")
    log_before = WORKER_LOG.read_text(errors="replace").count("run sent again")

    assert cut_every_other_connection() >= 1

    runs = [execution_request(agent=agent, trigger="api", input={"n": n}) for n in range(10)]
    for execution in runs:
        wait_for(execution, "succeeded", "failed", timeout=30)
        assert execution.status == "succeeded"
        assert execution.attempts.count() == 1  # sent again before its claim: not an attempt
    # The runs that met a dead connection were sent again, not acknowledged and dropped.
    resent = WORKER_LOG.read_text(errors="replace").count("run sent again") - log_before
    assert resent >= 1


def test_the_dispatcher_carries_on_after_its_connection_was_cut(worker, beat, make_agent):
    beat()
    agent = make_agent(config={"function": "demo.echo"})
    first = execution_request(
        agent=agent, trigger="api", not_before=timezone.now() + timezone.timedelta(seconds=1)
    )
    wait_for(first, "succeeded", timeout=30)  # published by a tick

    assert cut_every_other_connection() >= 1

    later = execution_request(
        agent=agent, trigger="api", not_before=timezone.now() + timezone.timedelta(seconds=1)
    )
    began = time.monotonic()
    wait_for(later, "succeeded", timeout=30)
    assert time.monotonic() - began < 30
    assert not Execution.objects.filter(status="running").exists()
