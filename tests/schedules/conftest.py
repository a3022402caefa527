"""Fixtures for the schedule tests: real ``celery beat`` processes, schedules, pinned time.

``beat`` starts ``celery -A config beat`` with django-celery-beat's DatabaseScheduler as a
subprocess on the test database and broker, with the same environment as the session's
worker (tests/conftest.py) and a dispatcher tick every second. Call it twice for two beats at
once; ``stop()`` on the returned process stops one (to test a restart). All are stopped at the
end of the test. Tests that use it also use ``worker``, which runs the ticks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings

from agents.schedule_services import schedule_create
from tests.conftest import ROOT, _database_url

BEAT_INTERVAL = 1


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives a real browser (chromium) with Playwright")


class BeatProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_sending(self, *, times: int = 1, timeout: float = 30) -> None:
        """Until beat has sent ``times`` ticks (it logs "Sending due task" for each)."""
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(errors="replace").count("Sending due task") < times:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery beat did not start:\n" + self.log_tail())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


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
        log_path = Path(settings.VAR_DIR) / f"test-{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CONVEYOR_EXECUTIONS_QUEUE": settings.CONVEYOR_EXECUTIONS_QUEUE,
            "CONVEYOR_MAINTENANCE_QUEUE": settings.CONVEYOR_MAINTENANCE_QUEUE,
            "CONVEYOR_DISPATCH_INTERVAL": str(BEAT_INTERVAL),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "config", "beat",
                    "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
                    # Not used by the DatabaseScheduler, but beat opens it: keep it out of the tree.
                    "--schedule", str(Path(settings.VAR_DIR) / f"{name}-schedule"),
                    "-l", "info",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        process = BeatProcess(proc, log_path)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@pytest.fixture
def beat(worker):
    """celery beat processes for this test (see Beats), all stopped at its end."""
    beats = Beats()
    yield beats
    beats.stop_all()


@pytest.fixture
def private_worker(worker):
    """``private_worker(queue)``: a worker process of this test's own, on ``queue`` only (so
    the test may kill it without touching the session's worker). Stopped at the end."""
    from config.celery import app

    started: list[subprocess.Popen] = []

    def start(queue: str) -> subprocess.Popen:
        nodename = f"private-{uuid.uuid4().hex[:8]}@{os.uname().nodename}"
        log_path = Path(settings.VAR_DIR) / f"test-{nodename.split('@')[0]}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "prefork",
                    "-c", "1", "-Q", queue, "-n", nodename, "--without-gossip",
                    "--without-mingle", "-l", "info",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        started.append(proc)
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[nodename], timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("The private worker did not start:\n" + log_path.read_text())
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def make_schedule():
    """``make_schedule(agent, at=..., **fields)``: a valid schedule (every 60 s by default)."""

    def make(agent, *, at=None, **fields):
        fields.setdefault("kind", "interval")
        if fields["kind"] == "interval":
            fields.setdefault("interval_seconds", 60)
        return schedule_create(agent=agent, at=at, **fields)

    return make


# --- Browser (Playwright with Debian's chromium, as in tests/pages/conftest.py) ----------------

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # A person in New York: the page shows times in their zone.
    return {
        **browser_context_args,
        "timezone_id": "America/New_York",
        "viewport": {"width": 1280, "height": 900},
    }


@pytest.fixture
def screenshot(page):
    """``screenshot("name")`` saves the whole page as test-artifacts/screenshots/name.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
