"""Fixtures for the notifications tests: receivers (real HTTP servers on 127.0.0.1), channels
that point at them, and what the worker processes wrote: mail files and completion hook calls.

The session's worker runs with CONVEYOR_OUTBOUND_ALLOW=127.0.0.1 (tests/stack.py), so URLs
written with 127.0.0.1 pass its outbound guard; this process is given the same allow-list.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.conf import settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from notifications.services import channel_create
from tests.stack import WORKER_LOG


@pytest.fixture(autouse=True)
def allow_local(settings):
    """The operator allows the receivers' address as written, like the test worker does."""
    settings.CONVEYOR_OUTBOUND_ALLOW = ["127.0.0.1"]


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 of this test's own, threaded so that a request it holds
    does not hold the next one. ``receiver.log`` lists the (request, response) pairs answered."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def url(server: HTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def requests_to(server: HTTPServer, path: str) -> list[Request]:
    return [request for request, _ in list(server.log) if request.path == path]


def payloads_to(server: HTTPServer, path: str) -> list[dict]:
    return [json.loads(request.get_data()) for request in requests_to(server, path)]


class Hang:
    """A handler that holds each request until ``release()`` (or ``limit`` seconds), then
    answers 200. ``arrived`` is set once a request is being held."""

    def __init__(self, limit: float = 60):
        self.limit = limit
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.held = 0  # requests being held right now

    def __call__(self, request: Request) -> Response:
        self.held += 1
        self.arrived.set()
        try:
            self.released.wait(self.limit)
        finally:
            self.held -= 1
        return Response("late", status=200)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def hang():
    handler = Hang()
    yield handler
    handler.release()  # a request still held must not outlive the test


@pytest.fixture
def make_channel(alice):
    """``make_channel(kind, target, owner=alice, name=...)``: a channel through
    ``channel_create``; returns ``(channel, secret)`` (the secret: webhook channels only)."""
    counter = iter(range(1, 10_000))

    def make(kind: str, target: str, *, owner=None, name: str | None = None):
        return channel_create(
            owner=owner or alice,
            kind=kind,
            name=name or f"{kind} {next(counter)}",
            target=target,
        )

    return make


def eventually(check, *, timeout: float = 20, what: str):
    """Poll ``check()`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not after {timeout} s.\nworker log:\n"
                f"{WORKER_LOG.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.05)


def mail_sent_to(address: str) -> list[EmailMessage]:
    """The messages to ``address`` that worker processes wrote with Django's file-based email
    backend into EMAIL_FILE_PATH (each file holds messages separated by a line of 79 dashes)."""
    directory = Path(settings.EMAIL_FILE_PATH)
    found = []
    for path in sorted(directory.glob("*.log")) if directory.exists() else []:
        for raw in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if not raw.strip():
                continue
            message = email.message_from_bytes(raw, policy=email.policy.default)
            if address in str(message.get("To", "")):
                found.append(message)
    return found
