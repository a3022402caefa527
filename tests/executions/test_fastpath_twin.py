"""The Postgres fast path is held to the ORM path, row for row.

Each scenario runs twice on the same Postgres database, once with the one-statement claim and
finish of ``executions.fastpath`` and once with the ORM path that SQLite takes
(``CONVEYOR_FASTPATH`` off), on two executions of the same agent, each created by its path, at
the same pinned times. Every row either path writes (the execution's fields, its events,
attempts and logs) must be equal,
field by field, apart from the keys that name the rows themselves.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import runner
from executions.errors import classify
from executions.models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog
from executions.services import (
    RunSpec,
    attempt_fail,
    attempt_succeed,
    execution_cancel,
    execution_claim,
    execution_request,
    execution_request_batch,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the fast path exists on Postgres only"
    ),
]

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# What names a row rather than describing it; everything else is compared.
IDENTITY = {"id", "uuid", "celery_task_id", "execution_id", "execution"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def log(execution: Execution, attempt: int, seconds: float, message: str, **data):
    return ExecutionLog(
        execution_id=execution.pk,
        attempt=attempt,
        at=at(seconds),
        level="info",
        message=message,
        data=data,
    )


def claim(execution: Execution, *, expected: int, seconds: float):
    claimed = execution_claim(
        execution_id=execution.pk, expected_attempt=expected, worker="twin@host", at=at(seconds)
    )
    assert claimed is not None
    return claimed


# --- Scenarios: each drives one execution through the services the worker uses ----------------


def succeeds(execution):
    claimed, attempt = claim(execution, expected=0, seconds=1)
    logs = [
        log(execution, 1, 1.5, "fetching", url="https://example.com"),
        log(execution, 1, 2, "ok"),
    ]
    assert attempt_succeed(
        execution=claimed, attempt=attempt, result={"rows": [1, 2]}, at=at(3), logs=logs
    )


def fails_permanently(execution):
    claimed, _ = claim(execution, expected=0, seconds=1)
    error = classify(ValueError("bad value"), timeout=30)
    attempt_fail(
        execution=claimed, number=1, error=error, at=at(2), logs=[log(execution, 1, 1, "x")]
    )


def retries_then_succeeds(execution):
    claimed, _ = claim(execution, expected=0, seconds=1)
    error = classify(ConnectionError("refused"), timeout=30)
    assert attempt_fail(execution=claimed, number=1, error=error, at=at(2)) == 1
    claimed, attempt = claim(execution, expected=1, seconds=4)
    assert attempt_succeed(execution=claimed, attempt=attempt, result="done", at=at(5))


def is_cancelled_while_running(execution):
    claimed, attempt = claim(execution, expected=0, seconds=1)
    execution_cancel(execution=Execution.objects.get(pk=execution.pk), by="alice", at=at(2))
    logs = [log(execution, 1, 2.5, "still working")]
    assert not attempt_succeed(
        execution=claimed, attempt=attempt, result={"late": True}, at=at(3), logs=logs
    )


def times_out_softly(execution):
    claimed, _ = claim(execution, expected=0, seconds=1)
    error = classify(SoftTimeLimitExceeded(), timeout=30)
    attempt_fail(execution=claimed, number=1, error=error, at=at(31))


def is_killed_at_the_hard_limit(execution, pinned_clock):
    claim(execution, expected=0, seconds=1)
    pinned_clock(at(35))
    runner.handle_hard_time_limit(execution_id=execution.pk)


def runs_through_the_runner(execution, pinned_clock):
    pinned_clock(at(1))
    runner.run_attempt(execution_id=execution.pk, expected_attempt=0, worker="twin@host")


# Each scenario and the status it leaves the execution in (timeouts are retried by default).
SCENARIOS = [
    (succeeds, "succeeded"),
    (fails_permanently, "failed"),
    (retries_then_succeeds, "succeeded"),
    (is_cancelled_while_running, "cancelled"),
    (times_out_softly, "retrying"),
    (is_killed_at_the_hard_limit, "retrying"),
    (runs_through_the_runner, "succeeded"),
]


# --- The comparison ----------------------------------------------------------------------------


def rows_of(execution: Execution) -> dict[str, list[dict]]:
    def values(queryset):
        return [
            {k: v for k, v in row.items() if k not in IDENTITY}
            for row in queryset.order_by("id").values()
        ]

    return {
        "execution": values(Execution.objects.filter(pk=execution.pk)),
        "events": values(ExecutionEvent.objects.filter(execution=execution)),
        "attempts": values(ExecutionAttempt.objects.filter(execution=execution)),
        "logs": values(ExecutionLog.objects.filter(execution=execution)),
    }


@pytest.fixture
def pinned_clock(monkeypatch):
    """``pinned_clock(t)``: from now on ``timezone.now()`` answers ``t``."""
    from django.utils import timezone

    def pin(when: datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: when)

    return pin


@pytest.mark.parametrize(
    ("scenario", "final"), SCENARIOS, ids=[scenario.__name__ for scenario, _ in SCENARIOS]
)
def test_both_paths_write_the_same_rows(scenario, final, make_agent, settings, pinned_clock):
    agent = make_agent(max_retries=2, retry_backoff=1, retry_jitter=False)
    written = {}
    for fastpath in (True, False):
        settings.CONVEYOR_FASTPATH = fastpath
        with CaptureQueriesContext(connection) as created:
            execution = execution_request(
                agent=agent, trigger="api", input={"n": 1}, reason="twin", at=T0
            )
        assert any(q["sql"].startswith("WITH created AS") for q in created) == fastpath
        with CaptureQueriesContext(connection) as queries:
            if "pinned_clock" in scenario.__code__.co_varnames:
                scenario(execution, pinned_clock)
            else:
                scenario(execution)
        # The switch really switches: only the fast path sends its one-statement claim.
        one_statement_claims = [q for q in queries if q["sql"].startswith("WITH old AS")]
        assert bool(one_statement_claims) == fastpath
        written[fastpath] = rows_of(execution)

    fast, orm = written[True], written[False]
    for table in ("execution", "events", "attempts", "logs"):
        assert len(fast[table]) == len(orm[table]), table
        for number, (a, b) in enumerate(zip(fast[table], orm[table], strict=True)):
            differing = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
            assert not differing, f"{table} row {number}: fast path vs ORM path {differing}"
    assert fast["execution"][0]["status"] == final


def test_a_batch_writes_the_same_rows_both_ways(make_agent, settings):
    """execution_request_batch: the one-statement insert of many runs and their events
    (fastpath.create_many) against the ORM's bulk inserts, on runs that differ in every way a
    batch's runs can: input (none, null, objects, lists), key, start now or later."""
    agent = make_agent()
    later = T0 + timedelta(minutes=5)
    specs = [
        RunSpec(),
        RunSpec(input={"n": 1}),
        RunSpec(input={"n": 2, "nested": {"a": [1, 2]}}, idempotency_key="api:twin-{}"),
        RunSpec(input=[1, "two"], not_before=later),
        RunSpec(input=None, idempotency_key="api:twin-{}-b", not_before=later),
        RunSpec(input="text", not_before=T0 - timedelta(minutes=1)),
        # Equal in Python, not in JSON: each must keep its own.
        RunSpec(input=1),
        RunSpec(input=True),
        RunSpec(input=1.5),
        RunSpec(input=[1]),
        RunSpec(input=[True]),
    ]
    written = {}
    for fastpath in (True, False):
        settings.CONVEYOR_FASTPATH = fastpath
        runs = [
            replace(s, idempotency_key=s.idempotency_key and s.idempotency_key.format(fastpath))
            for s in specs
        ]
        with CaptureQueriesContext(connection) as queries:
            executions = execution_request_batch(agent=agent, trigger="api", runs=runs, at=T0)
        assert any(q["sql"].startswith("WITH created AS") for q in queries) == fastpath
        assert all(e.pk for e in executions)
        written[fastpath] = [rows_of(e) for e in executions]
        # Each run's own row and event, in the order asked.
        assert [repr(e.input) for e in executions] == [repr(s.input) for s in specs]
        stored = Execution.objects.filter(pk__in=[e.pk for e in executions]).order_by("pk")
        assert [repr(e.input) for e in stored] == [repr(s.input) for s in specs]

    for number, (fast, orm) in enumerate(zip(written[True], written[False], strict=True)):
        for table in ("execution", "events"):
            assert len(fast[table]) == len(orm[table]) == 1, (number, table)
            a, b = fast[table][0], orm[table][0]
            differing = {  # by repr: True and 1 are equal in Python, not in a row
                k: (a[k], b.get(k))
                for k in a
                if repr(a[k]) != repr(b.get(k)) and k != "idempotency_key"
            }
            assert not differing, f"run {number} {table}: fast path vs ORM path {differing}"
