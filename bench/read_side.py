"""How fast the read side answers on a big executions table.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/conveyor_bench_read \\
        uv run python bench/read_side.py --rows 1000000

Fills the database with ``--rows`` executions first when it holds a different number
(bench/bulk_load.py), writes the hourly and daily rollups up to now (ops.rollups, as the hourly
task keeps them on a live installation; from scratch after a load), then requests each page ~20
times through Django's test Client against the real database and prints p50/p95 and the number
of queries per page: a user's executions page, an agent page, the admin changelist (plain and
filtered), the operations dashboard for each window, /metrics and /healthz.

The database (default conveyor_bench_read) is created and migrated if missing; the benchmark
may replace its executions. It is kept for the next run, with its million rows, unless
``--drop`` (which ``make bench`` passes) drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# Run as a script: the repository root on the path, for Conveyor's and this folder's modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bulk_load, common


def estimated_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", ["executions_execution"]
        )
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row else 0


def pages() -> list[tuple[str, str, str]]:
    """(label, who, url) of every page measured."""
    from django.contrib.auth import get_user_model
    from django.db.models import Count

    from agents.models import Agent

    user = get_user_model().objects.get(username=bulk_load.USERS[0])
    busiest = (
        Agent.objects.filter(owner=user).annotate(n=Count("executions")).order_by("-n").first()
    )
    return [
        ("my executions (/executions/)", "user", "/executions/"),
        ("my executions, failed filter", "user", "/executions/?status=failed"),
        ("agent page (busiest agent)", "user", f"/agents/{busiest.uuid}/"),
        ("home", "user", "/"),
        ("admin executions changelist", "staff", "/admin/executions/execution/"),
        (
            "admin changelist, status=failed",
            "staff",
            "/admin/executions/execution/?status__exact=failed",
        ),
        (
            "admin changelist, dead letters",
            "staff",
            "/admin/executions/execution/?status__exact=failed&retried=no",
        ),
        ("admin changelist, search agent", "staff", "/admin/executions/execution/?q=agent-0001"),
        ("admin agents changelist", "staff", "/admin/agents/agent/"),
        ("dashboard 1h", "staff", "/ops/?window=1h"),
        ("dashboard 24h", "staff", "/ops/?window=24h"),
        ("dashboard 7d", "staff", "/ops/?window=7d"),
        ("/metrics", "staff", "/metrics"),
        ("/healthz", "anonymous", "/healthz"),
    ]


def measure(requests: int) -> list[dict]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    User = get_user_model()
    clients = {"anonymous": Client()}
    clients["user"] = Client()
    clients["user"].force_login(User.objects.get(username=bulk_load.USERS[0]))
    clients["staff"] = Client()
    clients["staff"].force_login(User.objects.get(username=bulk_load.STAFF))

    results = []
    for label, who, url in pages():
        client = clients[who]
        for _ in range(2):  # warm the caches (Postgres' and Python's) first
            # secure: production settings redirect plain HTTP (SECURE_SSL_REDIRECT).
            response = client.get(url, secure=True)
        if response.status_code != 200:
            sys.exit(f"{url} answered {response.status_code}")
        with CaptureQueriesContext(connection) as ctx:
            client.get(url, secure=True)
        # Read now: the next request empties the connection's query log.
        queries = [float(q["time"]) * 1000 for q in ctx.captured_queries]
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            client.get(url, secure=True)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        results.append(
            {
                "page": label,
                "url": url,
                "p50": statistics.median(times),
                "p95": times[min(len(times) - 1, round(0.95 * (len(times) - 1)))],
                "queries": len(queries),
                "slowest_query": max(queries, default=0.0),
            }
        )
        print(f"  measured {label}", file=sys.stderr)
    return results


def roll_up(*, fresh: bool) -> None:
    """The rollups up to now; from scratch when the executions were just replaced (the rollups
    of the old ones would be counted with the new rows)."""
    from django.utils import timezone

    from ops.models import Rollup, RollupCursor
    from ops.rollups import roll_up

    if fresh:
        RollupCursor.objects.all().delete()
        Rollup.objects.all().delete()
    from django.db import connection

    started = time.perf_counter()
    written = roll_up(until=timezone.now())
    # Postgres's autovacuum would gather the new rows' statistics within a minute of a bulk
    # write like this one; the pages are measured at once, so gather them now (without them
    # the planner takes a 200,000-row table for an empty one and reads the dashboard's
    # per-agent rollups through the wrong index).
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Rollup._meta.db_table}")
    print(f"rolled up: {written:,} rollup rows written in {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="executions in the table")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument(
        "--drop",
        action="store_true",
        help="drop the database at the end (make bench does; kept otherwise, for the next run)",
    )
    args = parser.parse_args(argv)
    bulk_load.setup()
    try:
        _measure_and_print(args)
    finally:
        if args.drop:
            common.drop_database(os.environ["DATABASE_URL"])


def _measure_and_print(args: argparse.Namespace) -> None:
    have = estimated_rows()
    loaded = abs(have - args.rows) > max(1000, args.rows // 100)
    if loaded:
        print(f"loading {args.rows:,} executions (the table holds about {have:,}) ...")
        started = time.perf_counter()
        bulk_load.load(args.rows)
        print(f"loaded in {time.perf_counter() - started:.1f} s")
    roll_up(fresh=loaded)

    from django.db import connection

    results = measure(args.requests)
    version = connection.cursor().connection.info.server_version
    print()
    print(
        f"Read side, {estimated_rows():,} executions, Postgres {version // 10000}, "
        f"{args.requests} requests per page (ms, through Django's test Client)"
    )
    print()
    width = max(len(r["page"]) for r in results)
    print(f"{'page':<{width}}  {'p50':>8}  {'p95':>8}  {'queries':>7}  {'slowest query':>13}")
    for r in results:
        print(
            f"{r['page']:<{width}}  {r['p50']:8.1f}  {r['p95']:8.1f}  {r['queries']:>7}  "
            f"{r['slowest_query']:13.1f}"
        )


if __name__ == "__main__":
    main()
