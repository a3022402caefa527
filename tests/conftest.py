"""What every test can use: the real stack, personas, factories, and the marks that say which
tests need a worker or a browser. See tests/README.md for the layout and how to run a subset.

* tests/stack.py (a plugin loaded here): the embedded Redis, the session's ``worker`` process,
  ``private_worker``, ``beat``, ``private_redis``.
* tests/browser.py (a plugin loaded here): Playwright with Debian's chromium, ``alice_page``,
  ``staff_page``, ``screenshot``.
* Personas: ``alice`` (an owner), ``bob`` (another owner), ``staff`` (sam, an operator); a
  signed-in test client for each.
* Factories: ``make_agent``, ``make_execution`` (any state, reached through the services),
  ``make_schedule``; ``flow_started`` and ``step_ended`` drive a flow without a worker.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from standardwebhooks import Webhook

from agents.schedule_services import schedule_create
from agents.services import agent_create
from agents.webhook_signing import sign
from executions.errors import CATEGORIES, ClassifiedError
from executions.flows import flow_advance, flow_start
from executions.models import Execution, FlowStep
from executions.services import (
    attempt_close_cancelled,
    attempt_fail,
    attempt_succeed,
    execution_cancel,
    execution_claim,
    execution_request,
)

pytest_plugins = ["tests.stack", "tests.browser"]

WORKER_FIXTURES = frozenset({"celery_worker_process", "worker"})  # tests/stack.py
BROWSER_FIXTURES = frozenset({"page", "browser"})  # pytest-playwright's


# --- Marks ------------------------------------------------------------------------------------


def pytest_configure(config):
    for line in (
        "worker: uses the real Celery worker process (set from the test's fixtures)",
        "browser: drives chromium with Playwright (set from the test's fixtures)",
        "slow: takes more than a few seconds",
    ):
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(config, items):
    """Mark each test by what its fixtures start, so that ``-m worker``, ``-m browser`` and
    ``-m "not worker and not browser"`` select exactly those tests."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & WORKER_FIXTURES:
            item.add_marker("worker")
        if fixtures & BROWSER_FIXTURES:
            item.add_marker("browser")


def wait_for(execution: Execution, *statuses: str, timeout: float = 30) -> Execution:
    """Poll the row until its status is one of ``statuses`` (tests only; the engine never polls)."""
    from tests.stack import WORKER_LOG

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


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- Personas -----------------------------------------------------------------------------------


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
def alice_client(client, alice):
    """Django's test client, signed in as alice."""
    client.force_login(alice)
    return client


@pytest.fixture
def staff_client(client, staff):
    """Django's test client, signed in as staff (sam)."""
    client.force_login(staff)
    return client


# --- Factories ----------------------------------------------------------------------------------


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


def failure(category: str, *, retryable: bool, reason: str = "", detail: str = ""):
    """An error as ``executions.errors.classify`` hands it to the attempt services."""
    return ClassifiedError(
        category=category,
        retryable=retryable,
        reason=reason or "Something went wrong.",
        detail=detail or f"Traceback (most recent call last):\nError: {category}",
    )


@pytest.fixture
def make_execution():
    """An execution in any state, reached through the services a real run goes through.

    ``make_execution(agent, "failed", ago=..., seconds=..., attempt=2, error_category="auth")``

    * Requested (``execution_request``) ``ago`` before now, or ``at``; extra keywords go to the
      request (``trigger``, ``input``, ``not_before``, ``schedule``, ``scheduled_for``, ...).
    * ``queued`` stops there: a real queued run, published to the broker on commit unless it is
      delayed or held. Any other state is held instead, so that no message is sent for a run
      this factory finishes itself.
    * ``running``, ``retrying``, ``succeeded`` and ``failed`` claim ``attempt`` attempts
      (``execution_claim``), evenly spread over ``seconds`` from the time of the request (plus
      ``waited`` seconds before the first starts: its start latency); each
      attempt but the last fails with a temporary error (``attempt_fail``), the last one is
      left running, fails with a temporary error (``retrying``), succeeds with ``result``
      (``attempt_succeed``) or fails for good with ``error_category`` (``failed``: a temporary
      error once the attempts run out, else a permanent one), with ``reason`` and ``detail`` as
      the error's words and traceback.
    * ``cancelled`` is cancelled (``execution_cancel``) while queued, or while running its
      ``attempt``-th attempt if ``attempt`` is given.
    """

    def make(
        agent,
        status: str = "succeeded",
        *,
        ago: timedelta = timedelta(minutes=5),
        at: datetime | None = None,
        seconds: float = 1.5,
        attempt: int | None = None,
        trigger: str = "manual",
        error_category: str = "",
        reason: str = "",
        detail: str = "",
        result: Any = None,
        waited: float = 0,
        **request: Any,
    ) -> Execution:
        if status not in Execution.Status.values:
            raise ValueError(f"make_execution does not know the status {status!r}.")
        created = at or timezone.now() - ago
        if attempt is None:
            attempt = 0 if status in ("queued", "cancelled") else 1
        if status not in ("queued", "cancelled") and attempt < 1:
            raise ValueError(f"A {status} execution has made at least one attempt.")
        if status != "queued":
            request.setdefault("hold", True)
        total, parts = timedelta(seconds=seconds), max(attempt, 1)

        def after(part: int) -> datetime:  # the end of attempt ``part`` of ``parts``
            return created + timedelta(seconds=waited) + total * part / parts

        # One transaction: a message published on commit finds the run already past it.
        with transaction.atomic():
            execution = execution_request(agent=agent, trigger=trigger, at=created, **request)
            if status == "queued":
                return execution
            for number in range(1, attempt + 1):
                claimed = execution_claim(
                    execution_id=execution.pk,
                    expected_attempt=number - 1,
                    worker="test-worker@conveyor",
                    at=after(number - 1),
                )
                assert claimed is not None, f"attempt {number} of {execution} was not claimed"
                execution, opened = claimed
                ends = after(number)
                if number < attempt:
                    temporary = failure("network", retryable=True)
                    assert (
                        attempt_fail(execution=execution, number=number, error=temporary, at=ends)
                        is not None
                    ), f"{agent} does not retry attempt {number}"
            if status == "succeeded":
                assert attempt_succeed(execution=execution, attempt=opened, result=result, at=ends)
            elif status in ("failed", "retrying"):
                retrying = status == "retrying"
                category = error_category or ("network" if retrying else "internal")
                # A temporary error fails the run only once no attempts are left.
                last = attempt >= execution.max_attempts
                temporary = retrying or (CATEGORIES[category].retryable and last)
                error = failure(category, retryable=temporary, reason=reason, detail=detail)
                countdown = attempt_fail(execution=execution, number=attempt, error=error, at=ends)
                assert (countdown is not None) == retrying, f"{agent} does not retry it"
            elif status == "cancelled":
                stopped = after(parts)
                assert execution_cancel(execution=execution, at=stopped)
                if attempt:  # the worker notices and closes the attempt
                    attempt_close_cancelled(execution=execution, number=attempt, at=stopped)
        execution.refresh_from_db()
        return execution

    return make


# What the worker's tasks do for a flow, called in the test's own process: the test drives the
# engine step by step (at the times it gives), without a worker.


def flow_started(
    flow_agent, input: Any = None, *, trigger: str = "manual", at: datetime | None = None
) -> Execution:
    """A flow requested (``execution_request``, held: no message is sent for it) and started as
    the ``executions.start_flow`` task starts it (``flow_start``): its steps laid out, the first
    one started. ``at`` pins both times (default: now)."""
    flow = execution_request(agent=flow_agent, trigger=trigger, input=input, hold=True, at=at)
    started = flow_start(
        execution_id=flow.pk, expected_attempt=0, worker="test-worker@conveyor", at=at
    )
    assert started, f"{flow} was not started"
    flow.refresh_from_db()
    return flow


def step_ended(
    flow: Execution,
    key: str,
    *,
    result: Any = None,
    error: ClassifiedError | None = None,
    at: datetime | None = None,
    advance: bool = True,
) -> Execution:
    """The execution of the flow's step ``key`` makes one attempt as a worker's run does
    (``execution_claim``): it succeeds with ``result`` (``attempt_succeed``), or fails with
    ``error``, a ``failure(...)`` (``attempt_fail``: retried if the step's policy says so, the
    retry not run). Then the flow advances as ``executions.advance_flow`` does
    (``flow_advance``) and ``flow`` is refreshed; ``advance=False`` leaves that to the test.
    ``at`` pins every time (default: now at each call). Returns the step's execution."""
    step = FlowStep.objects.select_related("execution").get(flow=flow, key=key)
    assert step.execution is not None, f"step {key} has no execution ({step.status}, {step.note})"
    child = step.execution
    claimed = execution_claim(
        execution_id=child.pk,
        expected_attempt=child.attempt,
        worker="test-worker@conveyor",
        at=at or timezone.now(),
    )
    assert claimed is not None, f"the execution of step {key} ({child.status}) was not claimed"
    child, attempt = claimed
    if error is None:
        succeeded = attempt_succeed(
            execution=child, attempt=attempt, result=result, at=at or timezone.now()
        )
        assert succeeded, f"the execution of step {key} did not succeed"
    else:
        attempt_fail(execution=child, number=attempt.number, error=error, at=at or timezone.now())
    if advance:
        flow_advance(flow_id=flow.pk, at=at)
        flow.refresh_from_db()
    child.refresh_from_db()
    return child


@pytest.fixture
def make_schedule():
    """``make_schedule(agent, at=..., **fields)``: a valid schedule (every 60 s by default)."""

    def make(agent, *, at=None, **fields):
        fields.setdefault("kind", "interval")
        if fields["kind"] == "interval":
            fields.setdefault("interval_seconds", 60)
        return schedule_create(agent=agent, at=at, **fields)

    return make


# --- Callers of the webhook and the API -----------------------------------------------------------


def standard_sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Signed by the Standard Webhooks reference library, independently of Conveyor's code."""
    return Webhook(secret).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body.decode()
    )


class Sender:
    """Another system calling the webhook: ``sender.send(agent, {...}, secret=...)``."""

    def __init__(self):
        self.client = Client(enforce_csrf_checks=True)

    def headers(self, secret, body: bytes, *, msg_id=None, timestamp=None):
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        timestamp = int(time.time()) if timestamp is None else timestamp
        try:
            signature = standard_sign(secret, msg_id, timestamp, body)
        except UnicodeDecodeError:  # the reference signs text only; a body that is not UTF-8
            signature = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature,
        }

    def send(self, agent, payload=None, *, secret, raw=None, headers=None, **signing):
        body = raw if raw is not None else json.dumps(payload).encode()
        sent = self.headers(secret, body, **signing) if headers is None else headers
        return self.client.post(
            f"/hooks/{agent.uuid}/", data=body, content_type="application/json", headers=sent
        )


@pytest.fixture
def sender():
    return Sender()


def error_of(response) -> dict:
    """The ``error`` object of an error response (API and webhook), after checking the one
    format."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    return body["error"]
