"""Throughput: no-op executions end to end against raw Celery no-op tasks, interleaved.

Each round publishes ``-n`` raw Celery no-op tasks and waits until all have run, then creates
``-n`` Conveyor executions of a ``function`` agent (``demo.echo``, input null) in one
transaction and waits until all are terminal (created, claimed, attempt opened, events and log
written, succeeded). Both sides have a prefork worker of concurrency 2 of their own on the same
Redis, with acks late and prefetch 1. The clock starts just before the first publish (raw) or
the commit that publishes (Conveyor) and stops at the last task's or execution's finish time.

CPU time per execution is read from /proc for the producer (this process), the worker's main
process, its children, the Redis server and the Postgres backends of the benchmark database.

    uv run python -m bench.throughput [-n 2000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import statistics
import time

from bench import common

# Processes whose CPU time is reported, in this order.
GROUPS = ("producer", "worker main", "worker children", "redis-server", "postgres backends")


def raw_round(worker: common.Worker, n: int) -> dict:
    from bench import raw_celery

    r = common.redis_client()
    counter = f"bench-count-{common.RUN_ID}-{time.monotonic_ns()}"
    meter = common.CpuMeter(common.cpu_groups(worker, postgres=True))
    meter.start()
    started = time.time()
    for _ in range(n):
        raw_celery.noop.apply_async(args=[counter], queue=worker.queue)
    deadline = time.monotonic() + 60 + n / 50
    while int(r.get(counter) or 0) < n:
        if time.monotonic() > deadline:
            ran = int(r.get(counter) or 0)
            raise RuntimeError(f"raw Celery ran {ran} of {n} tasks:\n{worker.log_tail()}")
        time.sleep(0.05)
    finished = float(r.get(f"{counter}:last"))
    cpu = meter.stop()
    r.delete(counter, f"{counter}:last")
    return {"rate": n / (finished - started), "seconds": finished - started, "cpu": cpu}


def conveyor_round(worker: common.Worker, agent, n: int) -> dict:
    from django.db.models import Max

    from executions.models import Execution

    meter = common.CpuMeter(common.cpu_groups(worker, postgres=True))
    created = time.perf_counter()
    # The executions are written first; the meter and the clock start at the commit that
    # publishes them, so the figures cover only what happens from there on.
    from django.db import transaction

    from executions.services import execution_request

    with transaction.atomic():
        first = execution_request(agent=agent, trigger="api", input=None)
        for _ in range(n - 1):
            execution_request(agent=agent, trigger="api", input=None)
        create_seconds = time.perf_counter() - created
        meter.start()
        started = time.time()
    statuses = common.wait_until_finished(agent, since_pk=first.pk, n=n, timeout=60 + n / 20)
    cpu = meter.stop()
    if statuses.get(Execution.Status.SUCCEEDED, 0) != n:
        raise RuntimeError(f"Not every execution succeeded: {statuses}\n{worker.log_tail()}")
    last = Execution.objects.filter(agent=agent, pk__gte=first.pk).aggregate(t=Max("finished_at"))
    finished = last["t"].timestamp()
    return {
        "rate": n / (finished - started),
        "seconds": finished - started,
        "cpu": cpu,
        "create_rate": n / create_seconds,
    }


def add_arguments(p) -> None:
    p.add_argument("-n", type=int, default=2000, help="runs per side per round (2000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed runs per side first (200)")


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    common.print_header(f"Throughput: {args.n} no-op runs per side, {args.rounds} rounds", info)
    agent = common.bench_agent(label="throughput", queue=conveyor.queue)
    if args.warmup:
        raw_round(raw, args.warmup)
        conveyor_round(conveyor, agent, args.warmup)
    rounds: list[dict] = []
    for number in range(1, args.rounds + 1):
        a = raw_round(raw, args.n)
        b = conveyor_round(conveyor, agent, args.n)
        rounds.append({"raw": a, "conveyor": b, "ratio": b["rate"] / a["rate"]})
        print(
            f"   round {number}: raw Celery {a['rate']:7.1f}/s   Conveyor {b['rate']:7.1f}/s"
            f"   ratio {b['rate'] / a['rate']:.3f}",
            flush=True,
        )
    summary = summarize(rounds, args.n)
    print_summary(summary)
    return {"n": args.n, **summary}


def summarize(rounds: list[dict], n: int) -> dict:
    raw_rates = [r["raw"]["rate"] for r in rounds]
    conveyor_rates = [r["conveyor"]["rate"] for r in rounds]
    cpu_ms = {}
    for side in ("raw", "conveyor"):
        cpu_ms[side] = {
            group: statistics.median(r[side]["cpu"].get(group, 0.0) * 1000 / n for r in rounds)
            for group in GROUPS
        }
        cpu_ms[side]["total"] = sum(cpu_ms[side].values())
    return {
        "rounds": rounds,
        "raw_rate": common.spread(raw_rates),
        "conveyor_rate": common.spread(conveyor_rates),
        "ratio_of_medians": statistics.median(conveyor_rates) / statistics.median(raw_rates),
        "ratio": common.spread([r["ratio"] for r in rounds]),
        "create_rate": common.spread([r["conveyor"]["create_rate"] for r in rounds]),
        "cpu_ms_per_run": cpu_ms,
    }


def print_summary(s: dict) -> None:
    print("   runs/s, median (min - max):")
    print(f"     raw Celery  {common.fmt_spread(s['raw_rate'])}")
    print(f"     Conveyor    {common.fmt_spread(s['conveyor_rate'])}")
    print(
        f"     ratio Conveyor / raw Celery: {s['ratio_of_medians']:.3f} "
        f"(per round {common.fmt_spread(s['ratio'], '{:.3f}')}); target >= 0.5"
    )
    print(
        f"     (creating the executions, before the clock starts: "
        f"{common.fmt_spread(s['create_rate'], '{:.0f}')}/s)"
    )
    print("   CPU ms per run (median of rounds):")
    print(f"     {'process':<20}{'raw Celery':>12}{'Conveyor':>12}")
    for group in (*GROUPS, "total"):
        print(
            f"     {group:<20}{s['cpu_ms_per_run']['raw'][group]:>12.3f}"
            f"{s['cpu_ms_per_run']['conveyor'][group]:>12.3f}"
        )


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "throughput")
