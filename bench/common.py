"""What the benchmarks share: the environment, the database, the workers, the agents, and the
readings of CPU time and memory by process.

Nothing here imports Django at import time: :func:`setup` points this process at the
benchmark's database and Redis first, then starts Django.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/conveyor_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
# The benchmark database holds nothing secret: fixed keys, so that no .env is needed.
BENCH_SECRET_KEY = "conveyor-bench-not-a-secret"  # noqa: S105
BENCH_FERNET_KEY = "78aMSWNUTbrt4-mJnRnusTp58aMeVEsp1oJI86c63wc="
MIN_ROUNDS = 3
# The owner of the benchmarks' agents.
BENCH_USER = "conveyor-bench"
# This run's names (queues, agents, Redis keys), so that runs side by side never meet.
RUN_ID = uuid.uuid4().hex[:8]


# --- Environment and database -------------------------------------------------------------


def environment() -> dict[str, str]:
    """The environment of this process and of the workers it starts."""
    env = dict(os.environ)
    env["DATABASE_URL"] = env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    env["REDIS_URL"] = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    env.setdefault("SECRET_KEY", BENCH_SECRET_KEY)
    env.setdefault("CONVEYOR_SECRET_KEYS", BENCH_FERNET_KEY)
    # Production settings: with DEBUG on, Django keeps every query in memory.
    env["DEBUG"] = "false"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PYTHONUNBUFFERED"] = "1"
    # Conveyor's workers reopen their database connection every 1000 tasks by default; the
    # benchmark keeps it, so that each Postgres backend's CPU time can be read until the end
    # (a backend that exits takes its CPU time with it). One connection per 1000 runs is
    # negligible either way.
    env["CONVEYOR_DB_REUSE_MAX"] = "1000000"
    # Agents may only use declared queues: this run's (Worker.queue, and the one queries.py's
    # run waits on, which no worker reads).
    env["CONVEYOR_QUEUES"] = ";".join(
        f"bench-{label}-{RUN_ID}=This benchmark run's" for label in ("conveyor", "nobody")
    )
    return env


def setup() -> None:
    """Point this process at the benchmark's Postgres and Redis, create and migrate the
    database if needed, and start Django."""
    os.environ.update(environment())
    start_django({"DATABASE_URL": DEFAULT_DATABASE_URL})


def start_django(defaults: dict[str, str]) -> None:
    """Start Django in this process on a benchmark's Postgres database, created and migrated
    if needed (every benchmark script starts here).

    ``defaults`` (the database URL at least) fill what the environment leaves unset, as do the
    benchmark's fixed keys; Django runs with the production settings and DEBUG off (with
    DEBUG on it keeps every query in memory).
    """
    for key, value in {
        "SECRET_KEY": BENCH_SECRET_KEY,
        "CONVEYOR_SECRET_KEYS": BENCH_FERNET_KEY,
        **defaults,
    }.items():
        if not os.environ.get(key):
            os.environ[key] = value
    os.environ["DEBUG"] = "false"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    url = os.environ["DATABASE_URL"]
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            f"The benchmarks need Postgres: DATABASE_URL is {url.split(':', 1)[0]}://... "
            f"(unset it to use {defaults['DATABASE_URL']})."
        )
    _create_database(url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    # As a web process does once loaded (config/wsgi.py), so pages measured here pay the
    # garbage collector what they pay in production.
    from config.startup import freeze_loaded_objects

    freeze_loaded_objects()


def server_params(url: str) -> tuple[str, dict]:
    """The database name in ``url`` and the connection parameters of its server."""
    import dj_database_url

    db = dj_database_url.parse(url)
    params = {
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
    }
    return db["NAME"], params


def _create_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name, params = server_params(url)
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(url: str) -> None:
    """Drop the database of ``url`` (closing this process's connections to it first), even
    while other sessions use it."""
    import psycopg
    from psycopg import sql

    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: S110 (Django may not have started)
        pass
    name, params = server_params(url)
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


def redis_client():
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


def forget_queue(name: str) -> None:
    """Delete a queue of this run from Redis, with the lists of its priority levels and kombu's
    record of its exchange's bindings (Celery names the exchange after the queue)."""
    r = redis_client()
    # kombu keeps one list per priority level: the name, then "\x06\x16" and the level.
    levels = r.scan_iter(match=name + "\x06\x16*")
    r.delete(name, *levels, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


# Deletes the members of kombu's sorted set of binding deadlines (KEYS[1]) whose binding table
# (ARGV[1] followed by the member, an exchange's name) no longer exists, atomically, so that no
# binding made meanwhile loses its deadline.
_FORGET_UNBOUND = """
local gone = 0
for _, exchange in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if redis.call('EXISTS', ARGV[1] .. exchange) == 0 then
        gone = gone + redis.call('ZREM', KEYS[1], exchange)
    end
end
return gone
"""


def forget_unbound_deadlines() -> int:
    """kombu's deadlines of binding tables that are gone. The workers' remote-control queues
    (``celery.pidbox``, ``reply.celery.pidbox``) expire; kombu gives each of their exchanges a
    deadline an hour ahead in ``_kombu.binding_deadlines`` and removes it only in a sweep after
    that hour, by a consumer still running. The workers of a benchmark remove their bindings
    when they stop; this removes the deadlines nothing is bound under any more (a binding of
    another run still in progress keeps its own). Returns how many were removed."""
    r = redis_client()
    try:
        return r.eval(_FORGET_UNBOUND, 1, "_kombu.binding_deadlines", "_kombu.binding.")
    finally:
        r.close()


def var_dir() -> Path:
    from django.conf import settings

    path = Path(settings.VAR_DIR) / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- Command line -------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--rounds",
        type=int,
        default=MIN_ROUNDS,
        help=f"rounds of baseline then Conveyor (at least {MIN_ROUNDS}; default {MIN_ROUNDS})",
    )
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument(
        "--loglevel", default="info", help="the workers' log level (default: info, as in Procfile)"
    )
    return p


def check_rounds(args: argparse.Namespace) -> None:
    if args.rounds < MIN_ROUNDS:
        sys.exit(f"--rounds must be at least {MIN_ROUNDS}.")


def workers(loglevel: str) -> tuple[Worker, Worker]:
    """The baseline's worker and Conveyor's, started side by side."""
    raw = Worker(app="bench.raw_celery", label="raw", loglevel=loglevel)
    conveyor = Worker(app="config", label="conveyor", loglevel=loglevel)
    try:
        raw.launch()
        conveyor.launch()
        raw.wait_ready()
        conveyor.wait_ready()
    except BaseException:
        conveyor.stop()
        raw.stop()
        raise
    return raw, conveyor


def run_one(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[..., dict[str, Any]],
    name: str,
) -> None:
    """The command line of one benchmark: parse, set up, start both workers, run, report."""
    p = parser(doc.splitlines()[0])
    add_arguments(p)
    args = p.parse_args()
    check_rounds(args)
    setup()
    info = machine()
    raw, conveyor = workers(args.loglevel)
    try:
        figures = run(args, raw=raw, conveyor=conveyor, info=info)
    finally:
        conveyor.stop()
        raw.stop()
        delete_run_agents()
        forget_unbound_deadlines()
    write_json(args.json, {"benchmark": name, "machine": info, **figures})


# --- Workers --------------------------------------------------------------------------------


class Worker:
    """A ``celery worker`` process (prefork) of this run, on a queue of its own."""

    def __init__(self, *, app: str, label: str, concurrency: int = 2, loglevel: str = "info"):
        self.app = app
        self.label = label
        self.queue = f"bench-{label}-{RUN_ID}"
        self.nodename = f"bench-{label}-{RUN_ID}@{platform.node()}"
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.proc: subprocess.Popen | None = None
        self.log_path = var_dir() / f"worker-{label}.log"

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                self.app,
                "worker",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-Q",
                self.queue,
                "-n",
                self.nodename,
                "--without-gossip",
                "--without-mingle",
                "-l",
                self.loglevel,
            ],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self) -> None:
        from config.celery import app as control

        deadline = time.monotonic() + 60
        while not control.control.ping(destination=[self.nodename], timeout=0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The {self.label} worker did not start:\n{self.log_tail()}")
        # The pool's children exist once the worker answers; wait until all of them do.
        while len(self.processes()) < self.concurrency + 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self):
        """The worker takes no message from its queue inside the block (Celery's
        ``cancel_consumer``; the messages it holds already are finished) and consumes again
        after it (``add_consumer``)."""
        from config.celery import app as control

        def ask(command: str) -> None:
            answer = getattr(control.control, command)(
                self.queue, destination=[self.nodename], reply=True, timeout=5
            )
            if not answer:
                raise RuntimeError(f"The {self.label} worker did not answer {command}.")

        ask("cancel_consumer")
        try:
            yield
        finally:
            ask("add_consumer")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._forget_queue()
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._forget_queue()

    def _forget_queue(self) -> None:
        forget_queue(self.queue)

    def environment(self) -> dict[str, str]:
        env = environment()
        if self.app != "config":
            # Celery sets Django up in any worker that sees DJANGO_SETTINGS_MODULE: the
            # baseline must not carry Conveyor along.
            env.pop("DJANGO_SETTINGS_MODULE")
        return env

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def processes(self) -> list[psutil.Process]:
        """The main process and its pool's children."""
        if self.proc is None:
            return []
        try:
            main = psutil.Process(self.proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def main_pid(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def child_pids(self) -> list[int]:
        return [p.pid for p in self.processes()[1:]]

    def rss(self) -> int:
        """Resident memory of the main process and its children, in bytes."""
        total = 0
        for process in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total


# --- CPU time by process ---------------------------------------------------------------------


def redis_server_pid() -> list[int]:
    """The Redis server's pid when it runs on this machine (INFO tells it), else nothing."""
    pid = int(redis_client().info("server").get("process_id") or 0)
    try:
        if pid and "redis" in psutil.Process(pid).name():
            return [pid]
    except psutil.NoSuchProcess:
        pass
    return []


def postgres_backend_pids() -> list[int]:
    """The Postgres server processes serving connections to the benchmark database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend'"
        )
        pids = [row[0] for row in cursor.fetchall()]
    return [pid for pid in pids if psutil.pid_exists(pid)]


def _cpu_seconds(pid: int) -> float | None:
    if pid == os.getpid():
        # This process's own clock counts nanoseconds; /proc counts ticks of 10 ms, as many as a
        # small benchmark's whole producer side.
        return time.process_time()
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return times.user + times.system


class CpuMeter:
    """CPU seconds (user + system) used by groups of processes between
    :meth:`start` and :meth:`stop`. A process that appears meanwhile counts from zero; one that
    ends meanwhile is lost (the benchmarks keep their processes for the whole run).

    Listing a group's processes may cost them CPU (the Postgres backends are listed by a query
    on this process's own connection): the processes known are listed before the first
    reading and read again before the second listing, so neither listing is measured."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]):
        self.groups = groups
        self._pids: dict[str, list[int]] = {}
        self._before: dict[str, dict[int, float]] = {}
        self.used: dict[str, float] = {}

    @staticmethod
    def _read(pids_by_group: dict[str, list[int]]) -> dict[str, dict[int, float]]:
        readings = {}
        for name, pids in pids_by_group.items():
            readings[name] = {}
            for pid in pids:
                seconds = _cpu_seconds(pid)
                if seconds is not None:
                    readings[name][pid] = seconds
        return readings

    def start(self) -> None:
        self._pids = {name: list(pids()) for name, pids in self.groups.items()}
        self._before = self._read(self._pids)

    def stop(self) -> dict[str, float]:
        after = self._read(self._pids)
        appeared = {
            name: [pid for pid in pids() if pid not in self._pids[name]]
            for name, pids in self.groups.items()
        }
        for name, readings in self._read(appeared).items():
            after[name].update(readings)
        self.used = {
            name: sum(s - self._before.get(name, {}).get(pid, 0.0) for pid, s in pids.items())
            for name, pids in after.items()
        }
        return self.used


def cpu_groups(worker: Worker, *, postgres: bool) -> dict[str, Callable[[], list[int]]]:
    """The processes a benchmark's CPU time is read from."""
    groups: dict[str, Callable[[], list[int]]] = {
        "producer": lambda: [os.getpid()],
        "worker main": worker.main_pid,
        "worker children": worker.child_pids,
        "redis-server": redis_server_pid,
    }
    if postgres:
        groups["postgres backends"] = postgres_backend_pids
    return groups


# --- Conveyor side ----------------------------------------------------------------------------


def bench_agent(*, label: str, queue: str, function: str = "demo.echo", **fields: Any):
    """A function agent of this run, on ``queue``."""
    from django.contrib.auth import get_user_model

    from agents.services import agent_create

    owner, _ = get_user_model().objects.get_or_create(
        username=BENCH_USER, defaults={"email": "bench@example.com"}
    )
    return agent_create(
        owner=owner,
        name=f"bench-{label}-{RUN_ID}",
        kind="function",
        config={"function": function},
        queue=queue,
        **fields,
    )


def delete_run_agents() -> None:
    """Delete this run's agents and, with them, their executions; then the benchmarks' user,
    unless another run still has agents."""
    from django.contrib.auth import get_user_model

    from agents.models import Agent

    Agent.objects.filter(name__endswith=f"-{RUN_ID}", owner__username=BENCH_USER).delete()
    get_user_model().objects.filter(username=BENCH_USER, agents=None).delete()


def create_executions(agent, n: int, input: Any = None) -> tuple[int, float]:
    """Create ``n`` executions in one transaction; they are published when it commits.

    Returns the first execution's pk and the wall-clock time just before the commit.
    """
    from django.db import transaction

    from executions.services import execution_request

    with transaction.atomic():
        first = execution_request(agent=agent, trigger="api", input=input)
        for _ in range(n - 1):
            execution_request(agent=agent, trigger="api", input=input)
        committing_at = time.time()
    return first.pk, committing_at


def wait_until_finished(agent, *, since_pk: int, n: int, timeout: float) -> dict[str, int]:
    """Poll (every 50 ms) until the ``n`` executions of ``agent`` from ``since_pk`` on are
    terminal; returns how many ended in each status."""
    from django.db.models import Count

    from executions.models import Execution

    rows = Execution.objects.filter(agent=agent, pk__gte=since_pk)
    deadline = time.monotonic() + timeout
    while True:
        done = rows.filter(status__in=Execution.TERMINAL_STATUSES).count()
        if done >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"Only {done} of {n} executions finished within {timeout:.0f} s.")
        time.sleep(0.05)
    counts = rows.values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in counts}


# --- Figures ---------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(s: dict[str, float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])} - {fmt.format(s['max'])})"


def machine() -> dict[str, Any]:
    from django.db import connection

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        head = ""
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "git_head": head,
        "postgres": postgres,
        "redis": redis_client().info("server").get("redis_version"),
    }


def print_header(title: str, info: dict[str, Any]) -> None:
    print(f"== {title}")
    print(
        f"   {info['date']}, {info['cores']} cores, load {info['load_average']}, "
        f"git {info['git_head'] or '?'}, Python {info['python']}, "
        f"Postgres {info['postgres']}, Redis {info['redis']}"
    )


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
