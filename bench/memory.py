"""Memory: the worker's resident memory after 1,000 runs and after many more, beside raw Celery.

The resident memory (RSS) of a worker is the sum over its main process and its pool's children,
read from /proc. Both workers (prefork, concurrency 2) first run ``--first`` no-op runs
(1,000), then the rest up to ``--total`` (20,000 by default; ``--full`` for 100,000) in
rounds that alternate the two sides, in batches of ``--batch``. Growth is the last reading
against the one after the first 1,000.

    uv run python -m bench.memory [--total 20000 | --full] [--json out.json]
"""

from __future__ import annotations

import math

from bench import common
from bench.throughput import conveyor_round, raw_round


def run_batches(side: str, worker: common.Worker, agent, n: int, batch: int) -> None:
    while n > 0:
        size = min(batch, n)
        if side == "raw":
            raw_round(worker, size)
        else:
            conveyor_round(worker, agent, size)
        n -= size


def add_arguments(p) -> None:
    p.add_argument("--first", type=int, default=1000, help="runs before the first reading (1000)")
    p.add_argument("--total", type=int, default=20_000, help="runs per side in all (20000)")
    p.add_argument("--full", action="store_true", help="100,000 runs per side (a long run)")
    p.add_argument("--batch", type=int, default=1000, help="runs per batch (1000)")


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    total = 100_000 if args.full else args.total
    if total <= args.first:
        raise SystemExit("--total must be more than --first.")
    common.print_header(
        f"Worker memory: {args.first:,} then up to {total:,} no-op runs per side, "
        f"{args.rounds} rounds",
        info,
    )
    agent = common.bench_agent(label="memory", queue=conveyor.queue)
    workers = {"raw": raw, "conveyor": conveyor}
    readings: dict[str, list[tuple[int, int]]] = {"raw": [], "conveyor": []}
    done = {"raw": 0, "conveyor": 0}
    for side in ("raw", "conveyor"):
        readings[side].append((0, workers[side].rss()))
        run_batches(side, workers[side], agent, args.first, args.batch)
        done[side] = args.first
        readings[side].append((done[side], workers[side].rss()))
    per_round = math.ceil((total - args.first) / args.rounds)
    for number in range(1, args.rounds + 1):
        for side in ("raw", "conveyor"):
            n = min(per_round, total - done[side])
            run_batches(side, workers[side], agent, n, args.batch)
            done[side] += n
            readings[side].append((done[side], workers[side].rss()))
        print(
            f"   round {number}: after {done['conveyor']:,} runs: "
            f"raw Celery {readings['raw'][-1][1] / 2**20:6.1f} MiB   "
            f"Conveyor {readings['conveyor'][-1][1] / 2**20:6.1f} MiB",
            flush=True,
        )
    summary = {}
    for side in ("raw", "conveyor"):
        at_first = readings[side][1][1]
        last = readings[side][-1][1]
        summary[side] = {
            "readings_mib": [(n, round(rss / 2**20, 1)) for n, rss in readings[side]],
            "after_first_mib": at_first / 2**20,
            "after_total_mib": last / 2**20,
            "growth_pct": (last - at_first) / at_first * 100,
        }
    print(
        f"   worker RSS (main + children), MiB:   start   after {args.first:,}   "
        f"after {total:,}   growth"
    )
    for side, label in (("raw", "raw Celery"), ("conveyor", "Conveyor")):
        s = summary[side]
        print(
            f"     {label:<32}{s['readings_mib'][0][1]:7.1f}   {s['after_first_mib']:11.1f}   "
            f"{s['after_total_mib']:12.1f}   {s['growth_pct']:+5.1f}%"
        )
    print("   target: Conveyor's growth under 10%")
    return {"first": args.first, "total": total, **summary}


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "memory")
