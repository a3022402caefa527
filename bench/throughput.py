"""Throughput: no-op executions end to end against raw Celery no-op tasks, interleaved.

Each round publishes ``-n`` raw Celery no-op tasks while their worker runs and waits until all
have run, then runs Conveyor's ``-n`` executions of a ``function`` agent (``demo.echo``, input
null) in each mode (``--modes``), waiting each time until all are terminal (created, claimed,
attempt opened, events and log written, succeeded):

* drained: created in one transaction; the clock starts at the commit that publishes them all,
  so the queue is full at once and creating them is not timed.
* live: created one at a time, as the API creates them (``execution_request`` with no
  transaction of the caller's around it: each run its own transaction, then its publication),
  while the worker runs; the clock starts before the first is created, so creating them is
  timed (the producer's CPU counts), as publishing is on the raw side.

Both sides have a prefork worker of concurrency 2 of their own on the same Redis, with acks
late and prefetch 1. The clock stops at the last task's or execution's finish time; each
mode's ratio is against the raw figure of the same round.

CPU time per execution is read from /proc for the producer (this process), the worker's main
process, its children, the Redis server and the Postgres backends of the benchmark database.

    uv run python -m bench.throughput [-n 2000] [--rounds 3] [--modes drained,live]
        [--json out.json]
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


def conveyor_round(worker: common.Worker, agent, n: int, *, live: bool = False) -> dict:
    from django.db import transaction
    from django.db.models import Max

    from executions.models import Execution
    from executions.services import execution_request

    meter = common.CpuMeter(common.cpu_groups(worker, postgres=True))
    created = time.perf_counter()
    if live:
        # One at a time while the worker runs, as the API starts a run (no transaction of the
        # caller's around it): each is written and then published on its own.
        meter.start()
        started = time.time()
        first = execution_request(agent=agent, trigger="api", input=None)
        for _ in range(n - 1):
            execution_request(agent=agent, trigger="api", input=None)
        create_seconds = time.perf_counter() - created
    else:
        # The executions are written first; the meter and the clock start at the commit that
        # publishes them, so the figures cover only what happens from there on.
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


MODES = ("drained", "live")


def add_arguments(p) -> None:
    p.add_argument("-n", type=int, default=2000, help="runs per side per round (2000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed runs per side first (200)")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help="Conveyor's modes, comma-separated: drained (created in one transaction first), "
        "live (one per transaction while the worker runs) (drained,live)",
    )


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise SystemExit(f"--modes: {', '.join(unknown) or 'none given'}; choose from {MODES}")
    common.print_header(
        f"Throughput: {args.n} no-op runs per side, {args.rounds} rounds, "
        f"Conveyor {' and '.join(modes)}",
        info,
    )
    agent = common.bench_agent(label="throughput", queue=conveyor.queue)
    if args.warmup:
        raw_round(raw, args.warmup)
        conveyor_round(conveyor, agent, args.warmup)
    rounds: list[dict] = []
    for number in range(1, args.rounds + 1):
        a = raw_round(raw, args.n)
        entry = {"raw": a}
        line = f"   round {number}: raw Celery {a['rate']:7.1f}/s"
        for mode in modes:
            b = conveyor_round(conveyor, agent, args.n, live=mode == "live")
            entry[mode] = {"conveyor": b, "ratio": b["rate"] / a["rate"]}
            line += f"   {mode} {b['rate']:7.1f}/s (ratio {b['rate'] / a['rate']:.3f})"
        rounds.append(entry)
        print(line, flush=True)
    summary = summarize(rounds, args.n, modes)
    print_summary(summary)
    return {"n": args.n, **summary}


def _cpu_ms(rounds: list[dict], n: int, pick) -> dict[str, float]:
    cpu = {
        group: statistics.median(pick(r)["cpu"].get(group, 0.0) * 1000 / n for r in rounds)
        for group in GROUPS
    }
    cpu["total"] = sum(cpu.values())
    return cpu


def summarize(rounds: list[dict], n: int, modes: list[str]) -> dict:
    raw_rates = [r["raw"]["rate"] for r in rounds]
    summary = {
        "rounds": rounds,
        "modes": modes,
        "raw_rate": common.spread(raw_rates),
        "cpu_ms_per_run": {"raw": _cpu_ms(rounds, n, lambda r: r["raw"])},
    }
    for mode in modes:
        rates = [r[mode]["conveyor"]["rate"] for r in rounds]
        summary[mode] = {
            "conveyor_rate": common.spread(rates),
            "ratio_of_medians": statistics.median(rates) / statistics.median(raw_rates),
            "ratio": common.spread([r[mode]["ratio"] for r in rounds]),
            "create_rate": common.spread([r[mode]["conveyor"]["create_rate"] for r in rounds]),
        }
        summary["cpu_ms_per_run"][mode] = _cpu_ms(rounds, n, lambda r, m=mode: r[m]["conveyor"])
    return summary


def print_summary(s: dict) -> None:
    print("   runs/s, median (min - max):")
    print(f"     raw Celery          {common.fmt_spread(s['raw_rate'])}")
    for mode in s["modes"]:
        m = s[mode]
        print(f"     Conveyor, {mode:<9} {common.fmt_spread(m['conveyor_rate'])}")
    for mode in s["modes"]:
        m = s[mode]
        print(
            f"     ratio Conveyor {mode} / raw Celery: {m['ratio_of_medians']:.3f} "
            f"(per round {common.fmt_spread(m['ratio'], '{:.3f}')}); target >= 0.5"
        )
    for mode in s["modes"]:
        where = "before the clock starts" if mode == "drained" else "timed, one per transaction"
        rate = common.fmt_spread(s[mode]["create_rate"], "{:.0f}")
        print(f"     (creating them, {mode}: {rate}/s, {where})")
    columns = ["raw", *s["modes"]]
    print("   CPU ms per run (median of rounds):")
    header = "".join(f"{'raw Celery' if c == 'raw' else 'Conveyor ' + c:>18}" for c in columns)
    print(f"     {'process':<20}{header}")
    for group in (*GROUPS, "total"):
        cells = "".join(f"{s['cpu_ms_per_run'][c][group]:>18.3f}" for c in columns)
        print(f"     {group:<20}{cells}")


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "throughput")
