"""The SQL one no-op execution costs: every statement the producer and the worker send.

No worker is started: the script creates one execution of a ``demo.echo`` agent (its message
goes to a queue of its own that nobody reads, deleted afterwards), then runs its attempt in
this process with ``executions.runner.run_attempt``, the function the Celery task calls, and
lists the statements of each side with Django's ``CaptureQueriesContext``, which records the
``BEGIN`` and ``COMMIT`` of each transaction too: each statement is one round trip.

    uv run python -m bench.queries [--sql]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

from bench import common


def _shape(sql: str) -> str:
    """A statement without its values, to group identical ones."""
    sql = re.sub(r"'[^']*'", "?", sql)
    sql = re.sub(r"\b\d+(\.\d+)?\b", "?", sql)
    return re.sub(r'SAVEPOINT "?s\w+"?', "SAVEPOINT s", sql)


def capture(label: str, fn, *, show_sql: bool) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        fn()
    statements = [q["sql"] for q in ctx.captured_queries]
    kinds = Counter(s.split()[0].upper() for s in statements)
    print(
        f"   {label}: {len(statements)} round trips "
        f"({', '.join(f'{n} {k}' for k, n in kinds.most_common())})"
    )
    for number, sql in enumerate(statements, 1):
        text = sql if show_sql else _shape(sql)[:150]
        print(f"     {number:2d}. {text}")
    return {"round_trips": len(statements), "by_kind": dict(kinds)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sql", action="store_true", help="print the statements in full")
    args = p.parse_args()
    common.setup()
    from django.db import transaction

    from executions import runner
    from executions.models import Execution
    from executions.services import execution_request

    queue = f"bench-nobody-{common.RUN_ID}"
    agent = common.bench_agent(label="queries", queue=queue)
    created: list[Execution] = []

    def produce():
        with transaction.atomic():
            created.append(execution_request(agent=agent, trigger="api", input=None))

    def work():
        runner.run_attempt(execution_id=created[0].pk, expected_attempt=0, worker="bench")

    try:
        print("== SQL of one no-op execution (demo.echo, input null)")
        figures = {
            "producer": capture(
                "producer (execution_request, publish on commit)", produce, show_sql=args.sql
            ),
            "worker": capture("worker (run_attempt)", work, show_sql=args.sql),
        }
        created[0].refresh_from_db()
        assert created[0].status == Execution.Status.SUCCEEDED, created[0].status
    finally:
        common.forget_queue(queue)
        common.delete_run_agents()
    total = sum(f["round_trips"] for f in figures.values())
    print(f"   in all: {total} round trips to Postgres per execution")


if __name__ == "__main__":
    main()
