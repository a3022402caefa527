"""Retry timing: the planned wait between two attempts against the wait that happened.

Conveyor: a ``demo.flaky`` agent with ``retry_backoff=1``, no jitter, that fails ``--fail``
times before it succeeds; the planned wait is ``ExecutionAttempt.retry_delay`` and the actual
one the next attempt's ``started_at`` minus the failed attempt's ``finished_at``. Raw Celery: a
task that fails the same number of times and retries itself with ``self.retry(countdown=...)``,
recording the same two times. Both follow ``min(backoff_max, backoff * 2 ** (n - 1))``. Rounds
alternate the two sides; the error is actual minus planned.

    uv run python -m bench.retry_timing [-n 40] [--fail 3] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import itertools
import json
import time

from bench import common

BACKOFF = 1


def raw_round(worker: common.Worker, n: int, fail: int, backoff_max: int) -> list[dict]:
    from bench import raw_celery

    r = common.redis_client()
    key = f"bench-retry-{common.RUN_ID}"
    for index in range(n):
        raw_celery.flaky.apply_async(
            args=[key, index, fail, BACKOFF, backoff_max], queue=worker.queue
        )
    expected = n * (fail + 1)
    deadline = time.monotonic() + 60 + fail * backoff_max * 2
    while r.llen(key) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Raw retries did not finish:\n{worker.log_tail()}")
        time.sleep(0.1)
    records = [json.loads(x) for x in r.lrange(key, 0, -1)]
    r.delete(key)
    by_task: dict[int, dict[int, dict]] = {}
    for rec in records:
        by_task.setdefault(rec["index"], {})[rec["attempt"]] = rec
    gaps = []
    for attempts in by_task.values():
        for number in range(1, fail + 1):
            prev, nxt = attempts[number], attempts[number + 1]
            gaps.append({"planned": prev["delay"], "actual": nxt["started"] - prev["finished"]})
    return gaps


def conveyor_round(worker: common.Worker, agent, n: int, fail: int, backoff_max: int) -> list:
    from executions.models import Execution, ExecutionAttempt

    first_pk, _ = common.create_executions(agent, n, input={"fail_times": fail})
    statuses = common.wait_until_finished(
        agent, since_pk=first_pk, n=n, timeout=60 + fail * backoff_max * 2
    )
    if statuses.get(Execution.Status.SUCCEEDED, 0) != n:
        raise RuntimeError(f"Not every execution succeeded: {statuses}\n{worker.log_tail()}")
    attempts = ExecutionAttempt.objects.filter(
        execution__agent=agent, execution_id__gte=first_pk
    ).order_by("execution_id", "number")
    by_execution: dict[int, list[ExecutionAttempt]] = {}
    for attempt in attempts:
        by_execution.setdefault(attempt.execution_id, []).append(attempt)
    gaps = []
    for rows in by_execution.values():
        for prev, nxt in itertools.pairwise(rows):
            gaps.append(
                {
                    "planned": prev.retry_delay,
                    "actual": (nxt.started_at - prev.finished_at).total_seconds(),
                }
            )
    return gaps


def errors_ms(gaps: list[dict]) -> list[float]:
    return [(g["actual"] - g["planned"]) * 1000 for g in gaps]


def add_arguments(p) -> None:
    p.add_argument("-n", type=int, default=40, help="runs per side per round (40)")
    p.add_argument("--fail", type=int, default=3, help="failures before success (3)")
    p.add_argument(
        "--backoff-max", type=int, default=4, help="longest wait in seconds (4: waits 1, 2, 4)"
    )


def run(args, *, raw: common.Worker, conveyor: common.Worker, info: dict) -> dict:
    common.print_header(
        f"Retry timing: {args.n} runs x {args.fail} retries per side per round, "
        f"{args.rounds} rounds",
        info,
    )
    agent = common.bench_agent(
        label="retry",
        queue=conveyor.queue,
        function="demo.flaky",
        max_retries=args.fail,
        retry_backoff=BACKOFF,
        retry_backoff_max=args.backoff_max,
        retry_jitter=False,
    )
    rounds = []
    for number in range(1, args.rounds + 1):
        a = raw_round(raw, args.n, args.fail, args.backoff_max)
        b = conveyor_round(conveyor, agent, args.n, args.fail, args.backoff_max)
        rounds.append({"raw": a, "conveyor": b})
        print(
            f"   round {number}: median error raw Celery "
            f"{common.percentile(errors_ms(a), 50):+7.1f} ms   "
            f"Conveyor {common.percentile(errors_ms(b), 50):+7.1f} ms",
            flush=True,
        )
    summary = {}
    for side in ("raw", "conveyor"):
        errs = [e for r in rounds for e in errors_ms(r[side])]
        summary[side] = {
            "retries": len(errs),
            "median_error_ms": common.percentile(errs, 50),
            "p99_error_ms": common.percentile(errs, 99),
            "worst_error_ms": max(errs, key=abs),
            "round_median_ms": common.spread(
                [common.percentile(errors_ms(r[side]), 50) for r in rounds]
            ),
        }
    print("   actual minus planned wait, ms:  retries   median      p99    worst   round medians")
    for side, label in (("raw", "raw Celery"), ("conveyor", "Conveyor")):
        s = summary[side]
        print(
            f"     {label:<29}{s['retries']:7d}  {s['median_error_ms']:+7.1f}  "
            f"{s['p99_error_ms']:+7.1f}  {s['worst_error_ms']:+7.1f}   "
            f"{common.fmt_spread(s['round_median_ms'], '{:+.1f}')}"
        )
    return summary


if __name__ == "__main__":
    common.run_one(__doc__, add_arguments, run, "retry_timing")
