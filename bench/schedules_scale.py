"""How the dispatcher copes with many schedules due at once, on Postgres.

    uv run python bench/schedules_scale.py --schedules 10000

1. Bulk-creates ``--schedules`` enabled schedules, one per agent (the default overlap policy,
   ``skip``, so every slot pays the "is a run still active?" check), half cron expressions in
   five time zones and half intervals, all due in the same minute: their slot is the start of
   the current minute.
2. Runs dispatcher ticks back to back in this process, as workers would run the ticks beat
   sends every ``CONVEYOR_DISPATCH_INTERVAL`` seconds, until nothing is due.
3. Reports: ticks needed, wall time, how late the last slot's run was handed to the broker
   (relative to its slot), the CPU time of this process (``time.process_time``) and of the
   Postgres backend serving it (from /proc), queries, and the cost of one idle tick with all
   those schedules in the table.

The runs are published to a queue of this run's own that no worker consumes; it is deleted at
the end. The database (``conveyor_bench_schedules`` by default) is created and migrated if
needed, and emptied of this benchmark's earlier agents; ``--drop`` drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

# Run as a script: the repository root on the path, for Conveyor's and this folder's modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/conveyor_bench_schedules"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
OWNER = "bench-schedules"
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def setup() -> None:
    common.start_django(
        {
            "DATABASE_URL": DEFAULT_DATABASE_URL,
            "REDIS_URL": DEFAULT_REDIS_URL,
            "LOG_LEVEL": "WARNING",
            # No worker consumes this run's queue: without this, once the dispatch takes longer
            # than a minute the republish pass would rightly send the first, unclaimed runs
            # again.
            "CONVEYOR_REPUBLISH_AFTER": "3600",
        }
    )


def backend_cpu() -> float:
    """CPU seconds (user + system) used so far by the Postgres backend of our connection."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")  # Postgres on another machine
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class QueryCounter:
    """A database execute wrapper that counts the statements sent."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def populate(count: int, queue: str):
    """``count`` agents with one schedule each, all due at the start of this minute."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from agents.models import Agent, Schedule

    owner, _ = get_user_model().objects.get_or_create(username=OWNER)
    Agent.objects.filter(owner=owner).delete()
    now = timezone.now()
    slot = now.replace(second=0, microsecond=0)
    agents = Agent.objects.bulk_create(
        [
            Agent(
                owner=owner,
                name=f"scheduled-{i:05d}",
                kind="function",
                config={"function": "demo.echo"},
                queue=queue,
            )
            for i in range(count)
        ],
        batch_size=2000,
    )
    # Daily crons at a local time twelve hours away, hourly intervals: none of them comes due a
    # second time while the benchmark runs (that would add skipped slots to the figures).
    crons = {}
    for zone in ZONES:
        later = (now + timedelta(hours=12)).astimezone(ZoneInfo(zone))
        crons[zone] = f"{later.minute} {later.hour} * * *"
    schedules = []
    for i, agent in enumerate(agents):
        if i % 2:
            fields = {"kind": "interval", "interval_seconds": 3600}
        else:
            zone = ZONES[i % len(ZONES)]
            fields = {"kind": "cron", "cron": crons[zone], "timezone": zone}
        schedules.append(Schedule(agent=agent, next_run_at=slot, input={"i": i}, **fields))
    Schedule.objects.bulk_create(schedules, batch_size=2000)
    return slot


def run(count: int) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from agents.models import Schedule
    from executions import dispatch
    from executions.models import Execution

    queue = f"bench-schedules-{uuid.uuid4().hex[:8]}"
    created = time.perf_counter()
    populate(count, queue)
    populate_s = time.perf_counter() - created

    # Record when the runs are handed to the broker: the dispatcher publishes each batch's runs
    # together once it commits (executions.broker.publish_many).
    published: list[float] = []
    publish_seconds = [0.0]
    import executions.broker as broker

    real_publish_many = broker.publish_many

    def timed_publish_many(messages):
        began = time.perf_counter()
        copies = real_publish_many(messages)
        publish_seconds[0] += time.perf_counter() - began
        published.extend([time.time()] * len(messages))
        return copies

    broker.publish_many = timed_publish_many

    # All due at this very instant (the worst case of "due in the same minute").
    slot = timezone.now()
    Schedule.objects.filter(agent__owner__username=OWNER).update(next_run_at=slot)

    counter = QueryCounter()
    ticks = 0
    tick_seconds = []
    cpu_before, pg_before = time.process_time(), backend_cpu()
    wall_before = time.perf_counter()
    first_tick_s = None
    while Schedule.objects.filter(is_paused=False, next_run_at__lte=timezone.now()).exists():
        tick_began = time.perf_counter()
        with connection.execute_wrapper(counter):
            dispatch.tick()
        ticks += 1
        tick_seconds.append(round(time.perf_counter() - tick_began, 2))
        if first_tick_s is None:
            first_tick_s = tick_seconds[-1]
    wall = time.perf_counter() - wall_before
    cpu, pg = time.process_time() - cpu_before, backend_cpu() - pg_before
    queries = counter.count
    broker.publish_many = real_publish_many

    started = Execution.objects.filter(agent__owner__username=OWNER, trigger="schedule").count()
    lag_last = (
        (max(published) - slot.timestamp()) if published else float("nan")
    )  # the last run handed over, seconds after its slot
    lag_first = (min(published) - slot.timestamp()) if published else float("nan")

    # One more tick with nothing due: the steady-state cost of 10,000 schedules in the table.
    idle_counter = QueryCounter()
    idle_cpu, idle_pg = time.process_time(), backend_cpu()
    idle_began = time.perf_counter()
    with connection.execute_wrapper(idle_counter):
        dispatch.tick()
    idle = {
        "seconds": round(time.perf_counter() - idle_began, 4),
        "cpu_seconds": round(time.process_time() - idle_cpu, 4),
        "postgres_cpu_seconds": round(backend_cpu() - idle_pg, 4),
        "queries": idle_counter.count,
    }

    import redis

    # The queue, its priority sub-queues and kombu's bindings for it.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for pattern in (f"{queue}*", f"_kombu.binding*.{queue}"):
        for key in client.scan_iter(pattern):
            client.delete(key)
    # The user, with its agents, their schedules and runs.
    get_user_model().objects.filter(username=OWNER).delete()
    return {
        "schedules": count,
        "populate_seconds": round(populate_s, 2),
        "runs_started": started,
        "ticks": ticks,
        "first_tick_seconds": round(first_tick_s or 0.0, 2),
        "tick_seconds": tick_seconds,
        "dispatch_seconds": round(wall, 2),
        "slots_per_second": round(started / wall, 1) if wall else None,
        "lag_of_first_publish_seconds": round(lag_first, 2),
        "lag_of_last_publish_seconds": round(lag_last, 2),
        "cpu_seconds_dispatcher": round(cpu, 2),
        "cpu_seconds_postgres": round(pg, 2),
        "cpu_ms_per_slot": round(1000 * (cpu + pg) / max(started, 1), 3),
        "seconds_publishing": round(publish_seconds[0], 2),
        "queries": queries,
        "queries_per_slot": round(queries / max(started, 1), 2),
        "idle_tick": idle,
        "dispatch_interval": settings.CONVEYOR_DISPATCH_INTERVAL,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument(
        "--drop", action="store_true", help="drop the database at the end (make bench does)"
    )
    args = p.parse_args()
    setup()
    try:
        figures = run(args.schedules)
    finally:
        if args.drop:
            common.drop_database(os.environ["DATABASE_URL"])
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
