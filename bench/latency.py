"""Latency at idle: from creating an execution to it running, one at a time, beside raw Celery.

Conveyor: ``execution_request`` in a transaction; the clock starts once it has committed, before
the message is published (a commit hook registered ahead of the run's), and stops at the
attempt's ``started_at``, stamped by the worker when it claims the execution. The next execution
is created once the previous one has finished, so the worker is idle each time. Raw Celery: the
clock starts just before ``apply_async`` and stops at the time the task records when it starts.
Rounds alternate the two sides.

Both sides wait for the end of a run without taking the 2 cores from the worker they measure:
raw Celery's task pushes its time to a Redis list the benchmark waits on (``BLPOP``), and the
benchmark looks for the end of a Conveyor run only once ``FIRST_LOOK`` has passed (a run takes
a few milliseconds; a query every 2 ms from the start would compete with the claim it times).

    uv run python -m bench.latency [-n 500] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import math
import statistics
import time

from bench import common


def raw_round(worker: common.Worker, n: int) -> list[float]:
    from bench import raw_celery

    r = common.redis_client()
    key = f"bench-stamp-{common.RUN_ID}"
    latencies = []
    for _ in range(n):
        published = time.time()
        raw_celery.stamp.apply_async(args=[key], queue=worker.queue)
        reply = r.blpop([key], timeout=30)
        if reply is None:
            raise RuntimeError(f"The raw task did not run within 30 s:\n{worker.log_tail()}")
        latencies.append(float(reply[1]) - published)
        time.sleep(0.005)
    return latencies


# Seconds after a commit before the benchmark first looks whether the run has ended.
FIRST_LOOK = 0.02


def conveyor_round(worker: common.Worker, agent, n: int) -> list[float]:
    from django.db import transaction

    from executions.models import Execution, ExecutionAttempt
    from executions.services import execution_request

    latencies = []
    for _ in range(n):
        committed = []
        with transaction.atomic():
            # Hooks run in order once the transaction has committed: this one, then the run's
            # publication, which the interval includes (as raw Celery's includes apply_async).
            transaction.on_commit(lambda: committed.append(time.time()))  # noqa: B023
            execution = execution_request(agent=agent, trigger="api", input=None)
        (committed_at,) = committed
        deadline = time.monotonic() + 30
        rows = Execution.objects.filter(pk=execution.pk, status__in=Execution.TERMINAL_STATUSES)
        time.sleep(FIRST_LOOK)
        while not rows.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"The execution did not finish in 30 s:\n{worker.log_tail()}")
            time.sleep(0.002)
        started = ExecutionAttempt.objects.get(execution=execution, number=1).started_at
        latencies.append(started.timestamp() - committed_at)
        time.sleep(0.005)
    return latencies


def add_arguments(p) -> None:
    p.add_argument("-n", type=int, default=500, help="runs per side, over all rounds (500)")


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    per_round = math.ceil(args.n / args.rounds)
    common.print_header(
        f"Latency at idle: {per_round * args.rounds} runs per side, one at a time, "
        f"{args.rounds} rounds",
        info,
    )
    agent = common.bench_agent(label="latency", queue=conveyor.queue)
    raw_round(raw, 5)  # warm-up: connections opened, code paths loaded
    conveyor_round(conveyor, agent, 5)
    rounds = []
    for number in range(1, args.rounds + 1):
        a = [x * 1000 for x in raw_round(raw, per_round)]
        b = [x * 1000 for x in conveyor_round(conveyor, agent, per_round)]
        rounds.append({"raw": a, "conveyor": b})
        print(
            f"   round {number}: p50 raw Celery {statistics.median(a):6.2f} ms   "
            f"Conveyor {statistics.median(b):6.2f} ms",
            flush=True,
        )
    summary = {}
    for side in ("raw", "conveyor"):
        pooled = [x for r in rounds for x in r[side]]
        summary[side] = {
            "p50_ms": common.percentile(pooled, 50),
            "p99_ms": common.percentile(pooled, 99),
            "max_ms": max(pooled),
            "round_p50_ms": common.spread([statistics.median(r[side]) for r in rounds]),
        }
    summary["ratio_p50"] = summary["conveyor"]["p50_ms"] / summary["raw"]["p50_ms"]
    print("   create (commit) to running, ms:        p50      p99      max   round p50s")
    for side, label in (("raw", "raw Celery"), ("conveyor", "Conveyor")):
        s = summary[side]
        print(
            f"     {label:<34}{s['p50_ms']:7.2f}  {s['p99_ms']:7.2f}  {s['max_ms']:7.2f}   "
            f"{common.fmt_spread(s['round_p50_ms'], '{:.2f}')}"
        )
    print(
        f"   p50 Conveyor / raw Celery: {summary['ratio_p50']:.2f} (target <= 1.3); "
        f"Conveyor p99 {summary['conveyor']['p99_ms']:.2f} ms (target < 10 ms)"
    )
    return {"n": per_round * args.rounds, **summary}


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "latency")
