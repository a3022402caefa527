"""A real worker process survives every kind of malformed message on its queue's Redis lists
(config/broker.py), and runs the valid message that follows each one."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import pytest
from django.conf import settings

from config import broker
from executions.services import execution_request
from executions.tasks import run_execution
from ops.system import PRIORITY_SEPARATOR, queue_keys
from tests.conftest import wait_for
from tests.stack import VAR, discard_logs_if_passed, start_worker, stop

pytestmark = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis"),
    reason="Conveyor's Redis transport: the broker in use is not Redis",
)

PICKLE = "application/x-python-serialize"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fresh(template: dict, **changes) -> dict:
    """A copy of a real Celery message with new ids; ``changes`` replace top-level fields
    (``...`` removes one)."""
    message = json.loads(json.dumps(template))
    task_id = str(uuid.uuid4())
    message["headers"].update(id=task_id, root_id=task_id)
    message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
    for field, value in changes.items():
        if value is ...:
            del message[field]
        else:
            message[field] = value
    return message


def raw(message: dict) -> bytes:
    return json.dumps(message).encode()


def with_headers(template: dict, **headers) -> bytes:
    message = fresh(template)
    message["headers"].update(headers)
    return raw(message)


# name: (how to make it from a real message, whether the transport sets it aside). The others
# Celery's consumer rejects and logs itself.
POISON: dict[str, tuple[Callable[[dict], bytes], bool]] = {
    "not JSON": (lambda t: b"this is not JSON", True),
    "not UTF-8": (lambda t: b"\xff\xfe\x00 binary \x80", True),
    "JSON but not an object": (lambda t: b"[1, 2, 3]", True),
    "a JSON number": (lambda t: b"42", True),
    "JSON null": (lambda t: b"null", True),
    "an envelope without a body": (lambda t: raw(fresh(t, body=...)), True),
    "an envelope without properties": (lambda t: raw(fresh(t, properties=...)), True),
    "a body that is not base64": (lambda t: raw(fresh(t, body="!!! not base64 !!!")), True),
    "a body that is not [args, kwargs, embed]": (
        lambda t: raw(fresh(t, body=b64(b'{"a": 1}'))),
        True,
    ),
    "headers that are not an object": (lambda t: raw(fresh(t, headers="x")), True),
    # Celery reads the task id with headers["id"]: a KeyError, which kombu took for a lost
    # connection, reconnecting and being handed the same message again, forever.
    "headers without the task id": (
        lambda t: raw(fresh(t, headers={"task": "executions.run_execution"})),
        True,
    ),
    "a base64 body that is not JSON": (lambda t: raw(fresh(t, body=b64(b"not JSON"))), False),
    "JSON body with wrong task arguments": (
        lambda t: raw(fresh(t, body=b64(b'[["x", 1, 2], {}, {}]'))),
        False,
    ),
    "an unknown task name": (lambda t: with_headers(t, task="conveyor.no_such_task"), False),
    "a pickle payload": (
        lambda t: raw(fresh(t, body=b64(b"\x80K\x01."), **{"content-type": PICKLE})),
        False,
    ),
}


@pytest.fixture
def poison_queue(request, worker, broker_redis):
    """``(queue, template, worker)``: a worker process of this test's own on a queue of its
    own, and a real Celery message (run_execution) as it lies on that queue's list."""
    queue = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-poison"
    keys = queue_keys(queue)
    broker_redis.delete(*keys, broker.malformed_key(queue))
    run_execution.apply_async(args=[0], queue=queue)
    template = json.loads(next(filter(None, (broker_redis.rpop(key) for key in keys))))

    failed_before = request.session.testsfailed
    name = f"poison-{uuid.uuid4().hex[:8]}"
    process = start_worker(queues=queue, concurrency=1, name=name, log=VAR / f"test-{name}.log")
    yield queue, template, process
    stop(process.proc)
    broker_redis.delete(*keys, broker.malformed_key(queue))
    discard_logs_if_passed(request, failed_before, [process.log])


def finished(execution, process, *, after: str) -> None:
    try:
        wait_for(execution, "succeeded", "failed", timeout=20)
    except AssertionError:
        raise AssertionError(
            f"the run after {after} did not finish; the worker's log:\n{process.log_tail()}"
        ) from None


@pytest.mark.slow
def test_a_worker_survives_every_malformed_message_and_runs_the_next_one(
    poison_queue, broker_redis, make_agent
):
    queue, template, process = poison_queue
    agent = make_agent(queue=queue)
    expected_aside: list[bytes] = []

    for kind, (make, set_aside) in POISON.items():
        poison = make(template)
        broker_redis.lpush(queue, poison)
        if set_aside:
            expected_aside.insert(0, poison)
        execution = execution_request(agent=agent, trigger="manual", input={"after": kind})

        finished(execution, process, after=kind)
        assert execution.status == "succeeded", kind
        assert execution.result == {"after": kind}
        assert process.proc.poll() is None, f"the worker stopped on {kind}:\n{process.log_tail()}"

    # On a priority list too: set aside under the queue's own name.
    on_priority_list = b"not JSON, on the list of priority step 6"
    broker_redis.lpush(f"{queue}{PRIORITY_SEPARATOR}6", on_priority_list)
    expected_aside.insert(0, on_priority_list)
    execution = execution_request(agent=agent, trigger="manual")
    finished(execution, process, after="an entry on a priority list")
    assert execution.status == "succeeded"

    # Lists of a higher priority are served first: that run's message may have gone before the
    # entry on step 6's list. Then nothing of the queue is left waiting or unacknowledged (the
    # last run's message is acknowledged just after its row is written).
    deadline = time.monotonic() + 5
    while (
        broker_redis.llen(broker.malformed_key(queue)) < len(expected_aside)
        or any(broker_redis.llen(key) for key in queue_keys(queue))
        or any(queue.encode() in value for value in broker_redis.hvals("unacked"))
    ):
        assert time.monotonic() < deadline, "messages of the queue are left waiting or unacked"
        time.sleep(0.05)
    assert process.proc.poll() is None
    assert broker_redis.lrange(broker.malformed_key(queue), 0, -1) == expected_aside
    log = process.log.read_text(errors="replace")
    assert "Unrecoverable error" not in log
    assert "Connection to broker lost" not in log
    assert log.count("unreadable message on queue") == len(expected_aside)
