"""Fixtures for the agents tests: a local HTTP server on 127.0.0.1, a context to run kinds, and
an agent with its webhook on.

The server is real (pytest-httpserver, werkzeug on a thread); nothing here stands in for HTTP.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from pytest_httpserver import HTTPServer

from agents.kinds.http import kind as http_kind
from agents.secrets import Secrets
from agents.webhook_services import webhook_enable


@pytest.fixture(scope="session")
def httpserver_listen_address():
    # Written as 127.0.0.1 in URLs: the address the test worker's CONVEYOR_OUTBOUND_ALLOW names.
    return ("127.0.0.1", 0)


@pytest.fixture
def other_server():
    """A second server on 127.0.0.1 (another port, so another origin) for cross-site redirects."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def allow_local():
    """The operator allows the test server's address as written, like the test worker does."""
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=["127.0.0.1"]):
        yield


def local_url(server: HTTPServer, path: str, *, host: str = "127.0.0.1") -> str:
    """``path`` on ``server``, with the host written as ``host`` (e.g. localhost)."""
    return f"http://{host}:{server.port}{path}"


class RecordingContext:
    """A RunContext for running a kind in this process; it records logs and progress.

    The real one (executions.runner.ExecutionContext) writes them to the database; a kind
    only ever sees the RunContext protocol, which this implements.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        secrets: dict[str, str] | None = None,
        attempt: int = 1,
        seconds_left: float = 60,
    ):
        self.execution_id = str(uuid.uuid4())
        self.idempotency_key = f"conveyor-{self.execution_id}"
        self.attempt = attempt
        self.max_attempts = 4
        self.deadline = timezone.now() + timedelta(seconds=seconds_left)
        self.config = config
        self.secrets = Secrets(secrets or {})
        self.logs: list[tuple[str, str, dict[str, Any]]] = []
        self.progress_updates: list[tuple[int, str]] = []

    def log(self, level: str, message: str, **data: Any) -> None:
        self.logs.append((level, message, data))

    def progress(self, percent: int, message: str = "") -> None:
        self.progress_updates.append((percent, message))

    def is_cancelled(self) -> bool:
        return False

    def log_text(self) -> str:
        return "\n".join(f"{level} {message} {data!r}" for level, message, data in self.logs)


def http_context(
    config: dict[str, Any], *, secrets: dict[str, str] | None = None, **kwargs: Any
) -> RecordingContext:
    """A context for the http kind, its config validated as the agent's form would, but for
    the save-time address check: the run's own guard, which these tests check, judges the
    address (as for an agent saved before its address became refused)."""
    host = httpx.URL(str(config.get("url", ""))).host
    allowed = [*settings.CONVEYOR_OUTBOUND_ALLOW, host]
    with override_settings(CONVEYOR_OUTBOUND_ALLOW=allowed):
        cleaned = http_kind.clean_config(config)
    return RecordingContext(cleaned, secrets=secrets, **kwargs)


@pytest.fixture
def hooked(make_agent, alice):
    """Alice's echo agent with its webhook on: (agent, secret)."""
    agent = make_agent(alice, name="hooked")
    secret = webhook_enable(agent=agent)
    return agent, secret
