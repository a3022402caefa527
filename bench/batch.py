"""Batch starts: many runs created through ``POST /api/v1/agents/{id}/runs/batch``.

Each round publishes ``--runs`` raw Celery no-op tasks (one ``apply_async`` each, as a Celery
program sends them) and times that, then sends the same number of Conveyor runs in requests of
``--size`` through the API (Django's test client with a token: authentication, parsing, every
run's check, the bulk inserts, the pipelined publication and the response), and times that;
then it waits until every run has succeeded on the worker. It prints the time to create them,
its ratio to the raw publishing time of the same round (raw / Conveyor: 1.0 would be as fast)
and the time until the last one finished.

While one side creates or publishes, its worker takes no message (Celery's cancel_consumer;
it consumes them all afterwards): on 2 cores a worker running the first runs takes most of the
CPU the creation would get, and the figure would measure how the two share the machine.
``--consuming`` measures it that way instead.

    uv run python -m bench.batch [--runs 10000] [--size 1000] [--rounds 3] [--consuming]

Target (issue "Faster than its closest peer"): 10,000 runs in 10 calls created in under 2 s,
and all run.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time

from bench import common


def raw_publish(worker: common.Worker, n: int, *, consuming: bool) -> dict:
    from bench import raw_celery

    r = common.redis_client()
    counter = f"bench-count-{common.RUN_ID}-{time.monotonic_ns()}"
    with contextlib.nullcontext() if consuming else worker.paused():
        started = time.perf_counter()
        for _ in range(n):
            raw_celery.noop.apply_async(args=[counter], queue=worker.queue)
        published = time.perf_counter() - started
    deadline = time.monotonic() + 60 + n / 50
    while int(r.get(counter) or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"raw Celery ran {r.get(counter)} of {n} tasks")
        time.sleep(0.05)
    r.delete(counter, f"{counter}:last")
    return {"publish_seconds": published}


def conveyor_batches(
    worker: common.Worker, agent, client, n: int, size: int, *, consuming: bool
) -> dict:
    from django.db.models import Max

    from executions.models import Execution

    url = f"/api/v1/agents/{agent.uuid}/runs/batch"
    first_pk = (Execution.objects.aggregate(m=Max("pk"))["m"] or 0) + 1
    bodies = [
        json.dumps({"runs": [{"input": {"n": i}} for i in range(start, min(start + size, n))]})
        for start in range(0, n, size)
    ]
    calls = []
    with contextlib.nullcontext() if consuming else worker.paused():
        started, wall_started = time.perf_counter(), time.time()
        for body in bodies:
            t = time.perf_counter()
            response = client.post(url, body, content_type="application/json", secure=True)
            calls.append(time.perf_counter() - t)
            if response.status_code != 202:
                refused = f"{response.status_code} {response.content[:500]}"
                raise RuntimeError(f"batch refused: {refused}")
        created = time.perf_counter() - started
    statuses = common.wait_until_finished(agent, since_pk=first_pk, n=n, timeout=60 + n / 20)
    if statuses.get(Execution.Status.SUCCEEDED, 0) != n:
        raise RuntimeError(f"Not every run succeeded: {statuses}\n{worker.log_tail()}")
    finished = Execution.objects.filter(agent=agent, pk__gte=first_pk).aggregate(
        t=Max("finished_at")
    )["t"]
    return {
        "create_seconds": created,
        "call_seconds": calls,
        "all_ran_seconds": finished.timestamp() - wall_started,
    }


def add_arguments(p) -> None:
    p.add_argument("--runs", type=int, default=10_000, help="runs per side per round (10000)")
    p.add_argument("--size", type=int, default=1000, help="runs per request (1000, the most)")
    p.add_argument(
        "--consuming",
        action="store_true",
        help="the workers consume while the runs are created (by default each worker takes no "
        "message until its side has created or published them all, then runs them)",
    )


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    from django.conf import settings
    from django.test import Client

    from api.services import token_create

    # Django's test client calls itself "testserver".
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]

    common.print_header(
        f"Batch starts: {args.runs:,} runs per side in requests of {args.size:,}, "
        f"{args.rounds} rounds, "
        + ("the workers consuming meanwhile" if args.consuming else "each worker paused meanwhile"),
        info,
    )
    agent = common.bench_agent(label="batch", queue=conveyor.queue)
    token_row, token = token_create(owner=agent.owner, name=f"bench-{common.RUN_ID}")
    try:
        return _rounds(args, raw, conveyor, agent, Client(HTTP_AUTHORIZATION=f"Bearer {token}"))
    finally:
        token_row.delete()


def _rounds(args, raw: common.Worker, conveyor: common.Worker, agent, client) -> dict:
    consuming = args.consuming
    # warm-up
    conveyor_batches(conveyor, agent, client, min(args.size, 200), args.size, consuming=consuming)
    rounds = []
    for number in range(1, args.rounds + 1):
        a = raw_publish(raw, args.runs, consuming=consuming)
        b = conveyor_batches(conveyor, agent, client, args.runs, args.size, consuming=consuming)
        ratio = a["publish_seconds"] / b["create_seconds"]
        rounds.append({"raw": a, "conveyor": b, "ratio": ratio})
        print(
            f"   round {number}: raw Celery published in {a['publish_seconds']:.2f} s; "
            f"Conveyor created in {b['create_seconds']:.2f} s "
            f"(slowest request {max(b['call_seconds']):.3f} s; ratio {ratio:.2f}); "
            f"all ran {b['all_ran_seconds']:.1f} s after the first request",
            flush=True,
        )
    create = [r["conveyor"]["create_seconds"] for r in rounds]
    summary = {
        "runs": args.runs,
        "size": args.size,
        "rounds": rounds,
        "create_seconds": common.spread(create),
        "raw_publish_seconds": common.spread([r["raw"]["publish_seconds"] for r in rounds]),
        "ratio": common.spread([r["ratio"] for r in rounds]),
        "all_ran_seconds": common.spread([r["conveyor"]["all_ran_seconds"] for r in rounds]),
    }
    print("   seconds, median (min - max):")
    print(
        f"     Conveyor, creating {args.runs:,} in {-(-args.runs // args.size)} requests "
        f"{common.fmt_spread(summary['create_seconds'], '{:.2f}')}; target < 2"
    )
    print(
        f"     raw Celery, publishing them one by one "
        f"{common.fmt_spread(summary['raw_publish_seconds'], '{:.2f}')}"
    )
    print(
        f"     ratio raw / Conveyor {statistics.median(r['ratio'] for r in rounds):.2f} "
        "(above 1: creating a batch is faster than raw Celery publishing one by one)"
    )
    print(
        f"     every run succeeded; the last finished "
        f"{common.fmt_spread(summary['all_ran_seconds'])} s after the first request"
    )
    return summary


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "batch")
