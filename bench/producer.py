"""Creating one run: the producer's CPU for a run started as the API starts it, beside raw Celery.

Conveyor: ``execution_request`` with no transaction of the caller's around it (the run and its
creation event written, then its message published). Raw Celery: ``apply_async`` of a no-op
task. Both in this process, to queues no worker reads (emptied at the end), in rounds of ``-n``
each way, alternating, the CPU time of this process read around each round
(``time.process_time``): nothing here waits on a worker, so the figure is the producer's own
cost, round trips to Postgres and Redis included.

    uv run python -m bench.producer [-n 300] [--rounds 10] [--json out.json]
"""

from __future__ import annotations

import statistics
import time

from bench import common


def add_arguments(p) -> None:
    p.add_argument("-n", type=int, default=300, help="runs per side in each round (300)")


def _cpu_ms_per_run(start, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        start()
    return (time.process_time() - started) * 1000 / n


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    from bench import raw_celery
    from executions.services import execution_request

    rounds = max(args.rounds, 3)
    common.print_header(
        f"Creating one run: producer CPU, {args.n} runs per side and round, {rounds} rounds", info
    )
    queue = f"bench-nobody-{common.RUN_ID}"
    raw_queue = f"{queue}-raw"
    agent = common.bench_agent(label="producer", queue=queue)

    def conveyor_start():
        execution_request(agent=agent, trigger="api", input=None)

    def raw_start():
        raw_celery.noop.apply_async(args=["producer"], queue=raw_queue)

    try:
        for start in (raw_start, conveyor_start):  # warm-up: connections, code paths
            _cpu_ms_per_run(start, 20)
        figures: dict[str, list[float]] = {"raw": [], "conveyor": []}
        for _ in range(rounds):
            figures["raw"].append(_cpu_ms_per_run(raw_start, args.n))
            figures["conveyor"].append(_cpu_ms_per_run(conveyor_start, args.n))
    finally:
        common.delete_run_agents()
        common.forget_queue(queue)
        common.forget_queue(raw_queue)
    summary = {side: common.spread(values) for side, values in figures.items()}
    ratio = statistics.median(figures["conveyor"]) / statistics.median(figures["raw"])
    print("   producer CPU ms per run, median (min - max):")
    print(f"     raw Celery, apply_async           {common.fmt_spread(summary['raw'], '{:.3f}')}")
    print(
        f"     Conveyor, execution_request       {common.fmt_spread(summary['conveyor'], '{:.3f}')}"
        "; target <= 0.5"
    )
    print(f"     ratio Conveyor / raw Celery {ratio:.2f}")
    return {"n": args.n, "rounds": rounds, "cpu_ms_per_run": summary, "ratio": ratio}


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "producer")
