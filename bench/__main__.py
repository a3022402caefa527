"""All the benchmarks in one go: ``uv run python -m bench`` (what ``make bench`` runs).

Throughput, latency, the producer's cost, retry timing and batch starts share one pair of
workers (raw Celery and Conveyor); memory gets a fresh pair, so that its first reading is a new
worker's; retention starts no worker and runs last, in a process and a database of its own.
Every option of a benchmark is available with its name in front (``--throughput-n``,
``--memory-total``...).
"""

from __future__ import annotations

import argparse
import json

from bench import (
    batch,
    common,
    latency,
    memory,
    producer,
    retention,
    retry_timing,
    throughput,
)

BENCHMARKS = {
    "throughput": throughput,
    "latency": latency,
    "producer": producer,
    "retry_timing": retry_timing,
    "batch": batch,
    "memory": memory,
    # Starts no worker: runs last, in a process and a database of its own.
    "retention": retention,
}


def _options(name: str, module) -> tuple[argparse.ArgumentParser, list[str]]:
    """The benchmark's own parser, and the names of its options."""
    own = argparse.ArgumentParser(add_help=False)
    module.add_arguments(own)
    return own, [a.dest for a in own._actions]


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--only", help=f"a comma-separated subset of: {', '.join(BENCHMARKS)} (default: all)"
    )
    for name, module in BENCHMARKS.items():
        own, _ = _options(name, module)
        for action in own._actions:
            flag = f"--{name.replace('_', '-')}-{action.dest.replace('_', '-')}"
            kwargs = {"dest": f"{name}__{action.dest}", "default": action.default}
            if isinstance(action, argparse._StoreTrueAction):
                p.add_argument(flag, action="store_true", help=action.help, **kwargs)
            else:
                metavar = action.dest.upper()
                p.add_argument(flag, type=action.type, metavar=metavar, help=action.help, **kwargs)
    args = p.parse_args()
    common.check_rounds(args)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    common.setup()
    info = common.machine()
    results = {"machine": info}
    alone = [name for name in chosen if getattr(BENCHMARKS[name], "NO_WORKERS", False)]
    shared = [name for name in chosen if name != "memory" and name not in alone]
    groups = ([shared] if shared else []) + ([["memory"]] if "memory" in chosen else [])

    def run(name: str, raw, conveyor) -> None:
        own = argparse.Namespace(rounds=args.rounds, loglevel=args.loglevel)
        for dest in _options(name, BENCHMARKS[name])[1]:
            setattr(own, dest, getattr(args, f"{name}__{dest}"))
        results[name] = BENCHMARKS[name].run(own, raw=raw, conveyor=conveyor, info=common.machine())
        print(flush=True)

    try:
        for group in groups:
            raw, conveyor = common.workers(args.loglevel)
            try:
                for name in group:
                    run(name, raw, conveyor)
            finally:
                conveyor.stop()
                raw.stop()
        for name in alone:
            run(name, None, None)
    finally:
        common.delete_run_agents()
        common.forget_unbound_deadlines()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
