"""Retention on a big table: the clean-up of a million executions while new ones keep coming.

    uv run python -m bench.retention [--rows 1000000] [--days 120] [--batch 500]
        [--requests 20] [--insert-rate 50] [--baseline-seconds 20] [--json out.json]

1. Creates a database of its own next to DATABASE_URL's (``<name>_retention_<run id>``; default
   ``conveyor_bench_retention_<run id>``), migrates it and fills it with ``--rows`` executions
   spread over ``--days`` days, with attempts and events for one in 50
   (``bench/bulk_load.py``), then writes the rollups up to now, as the hourly task keeps them
   on a live installation.
2. Measures the operations dashboard's 7-day view and ``/metrics`` (``--requests`` requests each
   through Django's test client, as a signed-in operator, after two untimed ones): p50, p95.
3. Starts another process that creates executions one per transaction (``execution_request``
   of a delayed run: the row and its event, no broker message) at ``--insert-rate`` a second,
   timing each; after ``--baseline-seconds`` runs the clean-up (``retention_run``, what the
   daily task and ``manage.py cleanup`` run, without a time budget) with the defaults (30 days
   for succeeded runs, 90 for failed and cancelled ones), then stops the inserter.
4. Measures the dashboard and ``/metrics`` again, prints everything (insert latency before and
   during the clean-up: p50, p95, p99, max) and drops its database, whatever happened.

Needs Postgres (DATABASE_URL's server; the run's database is its own) and, for the dashboard's
broker panels, the benchmarks' Redis (REDIS_URL, default redis://127.0.0.1:6379/14), to which it
sends nothing. ``python -m bench`` runs it in a process of its own (``run``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script: the repository root on the path, for Conveyor's and this folder's modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bulk_load, common

PAGES = (("dashboard 7d", "/ops/?window=7d"), ("/metrics", "/metrics"))
NO_WORKERS = True  # bench/__main__.py: this one starts no Celery worker


def add_arguments(p) -> None:
    p.add_argument("--rows", type=int, default=1_000_000, help="executions loaded (1000000)")
    p.add_argument("--days", type=int, default=120, help="days they are spread over (120)")
    p.add_argument("--agents", type=int, default=300, help="agents they belong to (300)")
    p.add_argument("--batch", type=int, default=500, help="clean-up batch size (500)")
    p.add_argument("--requests", type=int, default=20, help="timed requests per page (20)")
    p.add_argument(
        "--insert-rate", type=float, default=50.0, help="inserts a second meanwhile (50)"
    )
    p.add_argument(
        "--baseline-seconds",
        type=float,
        default=20.0,
        help="seconds of inserts before the clean-up starts (20)",
    )


def run(args, *, raw=None, conveyor=None, info: dict) -> dict:
    """For ``python -m bench``: the benchmark in a process of its own (it runs Django on its
    own database), its output shown as it goes; returns its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "retention.json"
        options = []
        for name in ("rows", "days", "agents", "batch", "requests"):
            options += [f"--{name}", str(getattr(args, name))]
        options += ["--insert-rate", str(args.insert_rate)]
        options += ["--baseline-seconds", str(args.baseline_seconds)]
        proc = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "bench.retention", *options, "--json", str(out)],
            cwd=common.ROOT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench.retention ended with status {proc.returncode}")
        figures = json.loads(out.read_text())
    figures.pop("benchmark", None)
    figures.pop("machine", None)
    return figures


# --- Its own database ---------------------------------------------------------------------


def own_database_url(url: str) -> str:
    """``url`` with the database name ``<name>_retention_<run id>``."""
    base, _, name = url.rpartition("/")
    name, query = name.partition("?")[::2]
    return f"{base}/{name}_retention_{common.RUN_ID}" + (f"?{query}" if query else "")


# --- The inserter (another process) ---------------------------------------------------------


def insert(agent_pk: int, rate: float, ready, stop, out: str) -> None:
    """Create executions of agent ``agent_pk``, one per transaction, ``rate`` a second, until
    ``stop``; write [(wall-clock start, milliseconds, ok)] to ``out``."""
    import django

    django.setup()
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from agents.models import Agent
    from executions.services import execution_request

    agent = Agent.objects.get(pk=agent_pk)
    later = timezone.now() + timedelta(days=1)  # delayed: no broker message
    interval = 1 / rate
    samples = []
    due = time.perf_counter()
    n = 0
    ready.set()
    while not stop.is_set():
        began_at, began = time.time(), time.perf_counter()
        try:
            with transaction.atomic():
                execution_request(agent=agent, trigger="api", input={"n": n}, not_before=later)
            ok = True
        except Exception:
            ok = False
        samples.append((began_at, (time.perf_counter() - began) * 1000, ok))
        n += 1
        due += interval
        wait = due - time.perf_counter()
        if wait > 0:
            stop.wait(wait)
        else:
            due = time.perf_counter()  # behind: no burst to catch up
    Path(out).write_text(json.dumps(samples))


def latency(samples: list, since: float, until: float) -> dict[str, Any]:
    chosen = [ms for at, ms, ok in samples if since <= at < until and ok]
    failed = sum(1 for at, _, ok in samples if since <= at < until and not ok)
    if not chosen:
        return {"n": 0, "failed": failed}
    return {
        "n": len(chosen),
        "failed": failed,
        "p50_ms": common.percentile(chosen, 50),
        "p95_ms": common.percentile(chosen, 95),
        "p99_ms": common.percentile(chosen, 99),
        "max_ms": max(chosen),
    }


# --- Measuring --------------------------------------------------------------------------------


def measure_pages(requests: int) -> dict[str, dict[str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=bulk_load.STAFF))
    figures = {}
    for label, url in PAGES:
        for _ in range(2):  # warm the caches first
            response = client.get(url, secure=True)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            client.get(url, secure=True)
            times.append((time.perf_counter() - began) * 1000)
        figures[label] = {
            "p50_ms": common.percentile(times, 50),
            "p95_ms": common.percentile(times, 95),
            "max_ms": max(times),
        }
    return figures


def executions_count() -> int:
    from executions.models import Execution

    return Execution.objects.count()


def print_pages(when: str, pages: dict) -> None:
    for label, f in pages.items():
        print(
            f"   {when:<7} {label:<13} p50 {f['p50_ms']:8.1f} ms   p95 {f['p95_ms']:8.1f} ms   "
            f"max {f['max_ms']:8.1f} ms",
            flush=True,
        )


def print_latency(when: str, s: dict) -> None:
    if not s["n"]:
        print(f"   inserts {when}: none", flush=True)
        return
    print(
        f"   inserts {when:<22} {s['n']:>6}   p50 {s['p50_ms']:6.2f}  p95 {s['p95_ms']:6.2f}  "
        f"p99 {s['p99_ms']:6.2f}  max {s['max_ms']:7.2f} ms"
        + (f"   ({s['failed']} failed)" if s["failed"] else ""),
        flush=True,
    )


def measure(args, info: dict) -> dict[str, Any]:
    from django.conf import settings

    from executions.retention import retention_run
    from ops.rollups import roll_up

    common.print_header(
        f"Retention: {args.rows:,} executions over {args.days} days, batches of {args.batch}, "
        f"inserts at {args.insert_rate:g}/s meanwhile",
        info,
    )
    figures: dict[str, Any] = {"rows": args.rows, "days": args.days, "batch": args.batch}
    started = time.perf_counter()
    timings = bulk_load.load(args.rows, n_agents=args.agents, days=args.days)
    figures["load_seconds"] = time.perf_counter() - started
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"   loaded in {figures['load_seconds']:.1f} s ({steps})", flush=True)

    from django.utils import timezone

    started = time.perf_counter()
    roll_up(until=timezone.now())
    figures["rollup_seconds"] = time.perf_counter() - started
    print(f"   rollups written up to now in {figures['rollup_seconds']:.1f} s", flush=True)

    figures["before"] = measure_pages(args.requests)
    print_pages("before", figures["before"])
    figures["executions_before"] = executions_count()

    agent = common.bench_agent(label="retention-inserts", queue=settings.CONVEYOR_EXECUTIONS_QUEUE)
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Event(), spawn.Event()
    with tempfile.TemporaryDirectory() as tmp:
        samples_path = str(Path(tmp) / "inserts.json")
        inserter = spawn.Process(
            target=insert, args=(agent.pk, args.insert_rate, ready, stop, samples_path)
        )
        inserter.start()
        try:
            if not ready.wait(120):
                raise RuntimeError("The inserter did not start.")
            baseline_from = time.time()
            time.sleep(args.baseline_seconds)

            def progress(report, counts) -> None:
                if report.batches % 100 == 0:
                    print(
                        f"   ... {report.batches} batches, {report.executions:,} executions "
                        f"deleted ({time.time() - cleanup_from:.0f} s)",
                        flush=True,
                    )

            cleanup_from = time.time()
            report = retention_run(batch=args.batch, progress=progress)
            cleanup_until = time.time()
            time.sleep(min(args.baseline_seconds, 2))
        finally:
            stop.set()
            inserter.join(60)
            if inserter.is_alive():
                inserter.kill()
        samples = json.loads(Path(samples_path).read_text()) if inserter.exitcode == 0 else []
    if not samples:
        raise RuntimeError(f"The inserter ended with status {inserter.exitcode}.")
    seconds = cleanup_until - cleanup_from
    figures["cleanup"] = {
        "seconds": seconds,
        "batches": report.batches,
        "rows": report.counts(),
        "kept": report.kept,
        "executions_per_second": report.executions / seconds if seconds else 0.0,
    }
    figures["inserts"] = {
        "before_cleanup": latency(samples, baseline_from, cleanup_from),
        "during_cleanup": latency(samples, cleanup_from, cleanup_until),
    }
    rows = ", ".join(f"{n:,} {kind}" for kind, n in report.counts().items()) or "nothing"
    print(
        f"   clean-up: deleted {rows} in {report.batches} batches, {seconds:.1f} s "
        f"({figures['cleanup']['executions_per_second']:,.0f} executions/s)",
        flush=True,
    )
    print_latency("before the clean-up:", figures["inserts"]["before_cleanup"])
    print_latency("during the clean-up:", figures["inserts"]["during_cleanup"])

    figures["executions_after"] = executions_count()
    figures["after"] = measure_pages(args.requests)
    print_pages("after", figures["after"])
    print(
        f"   executions: {figures['executions_before']:,} before, "
        f"{figures['executions_after']:,} after (with the inserted ones)",
        flush=True,
    )
    return figures


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args()
    url = own_database_url(os.environ.get("DATABASE_URL") or common.DEFAULT_DATABASE_URL)
    os.environ["DATABASE_URL"] = url
    try:
        common.start_django(
            {
                "DATABASE_URL": url,
                "REDIS_URL": common.DEFAULT_REDIS_URL,
                "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
                "LOG_LEVEL": "WARNING",
            }
        )
        info = common.machine()
        figures = measure(args, info)
    finally:
        common.drop_database(url)
    common.write_json(args.json, {"benchmark": "retention", "machine": info, **figures})


if __name__ == "__main__":
    main()
