"""Postgres: the claim and the successful finish of an attempt, each in one statement.

These are the two steps every execution takes, and the engine's cost is mostly round trips to
the database (see bench/README.md). On Postgres each becomes a single statement of
data-modifying CTEs, so it is one round trip and one (implicit) transaction:

* claim: lock the row if it waits for exactly this attempt (the compare-and-set on status and
  attempt), move it to running, write the ExecutionEvent, open the ExecutionAttempt;
* finish: compare-and-set running -> succeeded for this attempt, write the event, close the
  attempt and write the buffered logs, all only if the compare-and-set won.

They do what ``runner.claim`` and ``runner._finish_success`` do with the ORM (the path SQLite
takes, and the reference for behaviour); the engine tests run both, on SQLite and Postgres.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.db import connection

from agents.models import Agent

from .models import Execution, ExecutionAttempt, ExecutionLog

CLAIM_SQL = """
WITH old AS (
    SELECT id, status FROM executions_execution
    WHERE id = %(id)s AND status IN ('queued', 'retrying') AND attempt = %(expected)s
    FOR UPDATE
), claimed AS (
    UPDATE executions_execution e
    SET status = 'running', attempt = e.attempt + 1,
        started_at = COALESCE(e.started_at, %(at)s), heartbeat_at = %(at)s,
        next_attempt_at = NULL, progress = 0, progress_message = ''
    FROM old WHERE e.id = old.id
    RETURNING e.*, old.status AS from_status
), event AS (
    INSERT INTO executions_executionevent
        (execution_id, from_status, to_status, at, attempt, reason, data)
    SELECT id, from_status, 'running', %(at)s, attempt,
           'Attempt ' || attempt || ' of ' || max_attempts || ' started', '{}'::jsonb
    FROM claimed
), opened AS (
    INSERT INTO executions_executionattempt
        (execution_id, number, started_at, outcome, error_category, error_message, worker)
    SELECT id, attempt, %(at)s, '', '', '', %(worker)s FROM claimed
    RETURNING id
)
SELECT claimed.*, opened.id AS attempt_pk FROM claimed, opened
"""

FINISH_SUCCESS_SQL = """
WITH done AS (
    UPDATE executions_execution
    SET status = 'succeeded', result = %(result)s::jsonb, progress = 100,
        finished_at = %(at)s, duration = %(at)s - started_at, heartbeat_at = NULL,
        error_category = '', error_title = '', error_message = '', error_detail = ''
    WHERE id = %(id)s AND status = 'running' AND attempt = %(attempt)s
    RETURNING id
), event AS (
    INSERT INTO executions_executionevent
        (execution_id, from_status, to_status, at, attempt, reason, data)
    SELECT id, 'running', 'succeeded', %(at)s, %(attempt)s, %(reason)s, '{}'::jsonb FROM done
), closed AS (
    UPDATE executions_executionattempt
    SET finished_at = %(at)s, outcome = 'succeeded', error_category = '', error_message = '',
        retry_delay = NULL
    WHERE id = %(attempt_pk)s AND finished_at IS NULL AND EXISTS (SELECT 1 FROM done)
), logs AS (
    INSERT INTO executions_executionlog (execution_id, attempt, at, level, message, data)
    SELECT %(id)s, x.attempt, x.at, x.level, x.message, x.data
    FROM jsonb_to_recordset(%(logs)s::jsonb)
        AS x(attempt int, at timestamptz, level text, message text, data jsonb)
)
SELECT count(*) FROM done
"""


def enabled() -> bool:
    return connection.vendor == "postgresql"


def claim(*, execution_id: int, expected_attempt: int, worker: str, at: datetime):
    rows = list(
        Execution.objects.raw(
            CLAIM_SQL,
            {"id": execution_id, "expected": expected_attempt, "at": at, "worker": worker},
        )
    )
    if not rows:
        return None
    execution = rows[0]
    execution.agent = Agent.objects.get(pk=execution.agent_id)
    attempt = ExecutionAttempt(
        pk=execution.attempt_pk,
        execution_id=execution.pk,
        number=execution.attempt,
        started_at=at,
        worker=worker,
    )
    return execution, attempt


def finish_success(
    *,
    execution: Execution,
    attempt: ExecutionAttempt,
    logs: list[ExecutionLog],
    result: Any,
    at: datetime,
) -> bool:
    """Returns whether the compare-and-set won; if not, nothing was written."""
    rows = [
        {
            "attempt": log.attempt,
            "at": log.at.isoformat(),
            "level": log.level,
            "message": log.message,
            "data": log.data,
        }
        for log in logs
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            FINISH_SUCCESS_SQL,
            {
                "id": execution.pk,
                "attempt": attempt.number,
                "at": at,
                "result": None if result is None else json.dumps(result),
                "reason": f"Attempt {attempt.number} succeeded",
                "attempt_pk": attempt.pk,
                "logs": json.dumps(rows),
            },
        )
        (won,) = cursor.fetchone()
    return bool(won)
