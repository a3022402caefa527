"""Fill a Postgres database with a realistic history of executions, fast.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/conveyor_bench_read \\
        uv run python bench/bulk_load.py --rows 1000000

One ``INSERT ... SELECT FROM generate_series`` writes the executions (30 days of history, a
realistic spread of statuses, durations, error categories and triggers over a few hundred
agents of a few users, busier agents more often), a second and third give a sample of them
attempts and status-change events, then ``VACUUM ANALYZE`` leaves the planner statistics and
the visibility map as autovacuum would on a live installation.

The database is created and migrated if needed. Existing executions in it are replaced.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

# Run as a script: the repository root on the path, for Conveyor's and this folder's modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/conveyor_bench_read"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"

STAFF = "bench-staff"
USERS = [f"bench-user-{i}" for i in range(1, 6)]


def setup() -> None:
    """Point Django at the benchmark database (creating and migrating it) and start it."""
    common.start_django(
        {
            "DATABASE_URL": DEFAULT_DATABASE_URL,
            "REDIS_URL": DEFAULT_REDIS_URL,
            "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }
    )


def ensure_people_and_agents(n_agents: int) -> None:
    """The staff member, the users and their agents (kept between loads)."""
    from django.contrib.auth import get_user_model

    from agents.models import Agent

    User = get_user_model()
    User.objects.get_or_create(username=STAFF, defaults={"is_staff": True, "is_superuser": True})
    owners = [User.objects.get_or_create(username=name)[0] for name in USERS]
    have = Agent.objects.filter(owner__in=owners).count()
    if have >= n_agents:
        return
    agents = []
    for i in range(have, n_agents):
        agents.append(
            Agent(
                owner=owners[i % len(owners)],
                name=f"agent-{i:04d}",
                kind="function",
                config={"function": "demo.echo"},
                timeout=(30, 60, 120, 300)[i % 4],
                # A few agents have a queue of their own.
                queue="bench-priority" if i % 25 == 0 else "executions",
                priority=5,
            )
        )
    Agent.objects.bulk_create(agents, batch_size=1000)


INSERT_EXECUTIONS = """
WITH a AS (
    SELECT id, owner_id, timeout, (row_number() OVER (ORDER BY id) - 1)::int AS i
    FROM agents_agent WHERE owner_id = ANY(%(owners)s)
), s AS (
    SELECT g,
           -- Busier agents more often: the square of a uniform number favours low indexes.
           floor(power(random(), 2) * %(n_agents)s)::int AS ai,
           now() - random() * make_interval(days => %(days)s) AS created,
           random() AS r_status, random() AS r_duration, random() AS r_category,
           random() AS r_attempts, random() AS r_trigger
    FROM generate_series(1, %(rows)s) AS g
), t AS (
    SELECT s.*, a.id AS agent_id, a.owner_id, a.timeout,
           CASE
               WHEN r_status < 0.86 THEN 'succeeded'
               WHEN r_status < 0.95 THEN 'failed'
               WHEN r_status < 0.985 THEN 'cancelled'
               WHEN created > now() - interval '15 minutes' THEN
                   (ARRAY['queued', 'running', 'retrying'])[1 + floor(r_duration * 3)::int]
               ELSE 'succeeded'
           END AS status,
           -- Mostly short runs, a long tail up to the agent's timeout.
           least(exp(r_duration * ln(600)) - 0.9, a.timeout) AS seconds
    FROM s JOIN a ON a.i = s.ai
)
INSERT INTO executions_execution (
    uuid, agent_id, owner_id, trigger, input, status, progress, progress_message, attempt,
    max_attempts, next_attempt_at, result, error_category, error_title, error_message,
    error_detail, created_at, started_at, finished_at, duration, celery_task_id,
    idempotency_key, retry_of_id, parent_id, step_index, not_before, heartbeat_at, notified,
    schedule_id, scheduled_for, wait_reason, wait_until, waits_on, step_key
)
SELECT
    -- md5, not gen_random_uuid(): the latter reads the kernel's random source per row.
    md5(%(salt)s || g::text)::uuid, agent_id, owner_id,
    (ARRAY['manual', 'api', 'api', 'webhook', 'schedule', 'schedule', 'schedule', 'retry'])
        [1 + floor(r_trigger * 8)::int],
    jsonb_build_object('n', g),
    status,
    CASE WHEN status = 'succeeded' THEN 100 ELSE 0 END,
    '',
    CASE
        WHEN status = 'queued' THEN 0
        WHEN status = 'failed' THEN 1 + floor(r_attempts * 4)::int
        WHEN r_attempts > 0.9 THEN 2 + floor((r_attempts - 0.9) * 20)::int
        ELSE 1
    END,
    4,
    CASE WHEN status = 'retrying' THEN now() + interval '30 seconds' END,
    CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
    CASE
        WHEN status = 'cancelled' THEN 'cancelled'
        WHEN status = 'failed' THEN
            (ARRAY['timeout', 'timeout', 'timeout', 'network', 'network', 'upstream_error',
                   'upstream_error', 'rate_limited', 'invalid_input', 'internal', 'auth'])
                [1 + floor(r_category * 11)::int]
        ELSE ''
    END,
    CASE WHEN status = 'failed' THEN 'The agent failed' ELSE '' END,
    CASE WHEN status = 'failed' THEN 'A generated failure.' ELSE '' END,
    CASE WHEN status = 'failed' THEN 'Traceback (most recent call last): generated' ELSE '' END,
    created,
    CASE WHEN status <> 'queued' THEN created + interval '50 milliseconds' END,
    CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
         THEN created + interval '50 milliseconds' + seconds * interval '1 second' END,
    CASE WHEN status IN ('succeeded', 'failed', 'cancelled')
         THEN seconds * interval '1 second' END,
    md5(%(salt)s || 'task' || g::text),
    NULL, NULL, NULL, NULL, NULL,
    CASE WHEN status = 'running' THEN now() END,
    status IN ('succeeded', 'failed'),
    NULL, NULL,
    CASE status WHEN 'queued' THEN 'broker' WHEN 'retrying' THEN 'backoff' ELSE '' END,
    CASE WHEN status = 'retrying' THEN now() + interval '30 seconds' END,
    '', ''
FROM t
-- In time order, as a live installation writes them (and ids grow with time).
ORDER BY created
"""

# One attempt row per attempt and the status changes, for one execution in SAMPLE_EVERY.
SAMPLE_EVERY = 50
INSERT_ATTEMPTS = """
INSERT INTO executions_executionattempt (
    execution_id, number, started_at, finished_at, outcome, error_category, error_message,
    retry_delay, worker
)
SELECT e.id, n.n, e.started_at, e.finished_at,
       CASE WHEN n.n < e.attempt THEN 'failed' WHEN e.status = 'running' THEN ''
            ELSE e.status END,
       CASE WHEN n.n < e.attempt THEN 'network' ELSE e.error_category END,
       CASE WHEN n.n < e.attempt THEN 'A generated temporary failure.' ELSE '' END,
       CASE WHEN n.n < e.attempt THEN 5 * power(2, n.n - 1) END,
       'celery@bench'
FROM executions_execution e
CROSS JOIN LATERAL generate_series(1, e.attempt) AS n(n)
WHERE e.id %% %(every)s = 0
"""
INSERT_EVENTS = """
INSERT INTO executions_executionevent (execution_id, from_status, to_status, at, attempt, reason,
                                       data)
SELECT e.id, v.from_status, v.to_status, v.at, v.attempt, v.reason, '{}'::jsonb
FROM executions_execution e
CROSS JOIN LATERAL (VALUES
    ('', 'queued', e.created_at, 0, 'Started'),
    ('queued', 'running', coalesce(e.started_at, e.created_at), 1, ''),
    ('running', e.status, coalesce(e.finished_at, e.created_at), e.attempt, '')
) AS v(from_status, to_status, at, attempt, reason)
WHERE e.id %% %(every)s = 0 AND e.status NOT IN ('queued', 'running')
"""
RESET = (
    "TRUNCATE executions_executionlog, executions_executionevent, executions_executionattempt, "
    "executions_execution RESTART IDENTITY CASCADE"
)


def _drop_indexes_and_constraints(cursor, table: str):
    """Drop the table's foreign keys, unique constraints and secondary indexes; returns what
    recreates them: ([(constraint name, definition)], [CREATE INDEX statements])."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid), conindid FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('f', 'u')",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary "
        "AND i.indexrelid NOT IN "
        "(SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    )
    indexes = cursor.fetchall()
    for name, _definition, _index in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        cursor.execute(f"DROP INDEX {name}")
    return [(n, d) for n, d, _ in constraints], [d for _, d in indexes]


def load(rows: int, *, n_agents: int = 300, days: int = 30) -> dict[str, float]:
    """Replace the executions with ``rows`` generated ones; returns seconds per step."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    ensure_people_and_agents(n_agents)
    owners = list(get_user_model().objects.filter(username__in=USERS).values_list("pk", flat=True))
    timings = {}
    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(RESET)
        cursor.execute("SELECT setseed(0.42)")
        timings["truncate"] = time.perf_counter() - started

        started = time.perf_counter()
        with transaction.atomic():
            # Index and check once at the end rather than row by row: much faster, and all of
            # it is rolled back (indexes included) if anything fails.
            constraints, indexes = _drop_indexes_and_constraints(cursor, "executions_execution")
            cursor.execute(
                INSERT_EXECUTIONS,
                {
                    "owners": owners,
                    "n_agents": n_agents,
                    "days": days,
                    "rows": rows,
                    "salt": uuid.uuid4().hex,
                },
            )
            timings["executions"] = time.perf_counter() - started
            started = time.perf_counter()
            for statement in indexes:
                cursor.execute(statement)
            for name, definition in constraints:
                cursor.execute(
                    f'ALTER TABLE executions_execution ADD CONSTRAINT "{name}" {definition}'
                )
            timings["indexes and constraints"] = time.perf_counter() - started

        started = time.perf_counter()
        cursor.execute(INSERT_ATTEMPTS, {"every": SAMPLE_EVERY})
        cursor.execute(INSERT_EVENTS, {"every": SAMPLE_EVERY})
        timings["attempts and events"] = time.perf_counter() - started

        started = time.perf_counter()
        for table in (
            "executions_execution",
            "executions_executionattempt",
            "executions_executionevent",
            "agents_agent",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
        timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="executions to write")
    parser.add_argument("--agents", type=int, default=300, help="agents (over 5 users)")
    parser.add_argument("--days", type=int, default=30, help="days of history")
    args = parser.parse_args(argv)
    setup()
    started = time.perf_counter()
    timings = load(args.rows, n_agents=args.agents, days=args.days)
    total = time.perf_counter() - started
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"loaded {args.rows:,} executions in {total:.1f} s ({steps})")


if __name__ == "__main__":
    main()
