"""Publishing runs: "run execution X" to the broker.

``services.enqueue_through_celery`` publishes one run through Celery (``apply_async``):
routing, options and the message built by ``app.amqp.as_task_v2``, then kombu's producer. That
costs ~0.4-1 ms of CPU a message, which is most of the time of a batch of 1,000 runs
(bench/batch.py) or of a burst of schedules, and a large part of starting one run.
:func:`publish_many` (which ``services.enqueue`` calls for a run sent now) does the same work
once and copies it:

* On a Redis broker, the first run of each queue in this process goes through Celery as any
  other (so Celery declares the queue, as it always does). The message Celery's own
  ``as_task_v2`` builds is the template of the others (kept while the thread's reply address
  and the task being run stay the same): each is a copy with its own task id, execution,
  attempt, agent, queue, priority and time limits (``run_options``, what Celery is given too),
  encoded as kombu's Redis channel encodes a message (its ``encode_body``, its priority queues)
  and pushed in one round trip, on a connection to the broker each thread keeps.
  tests/executions/test_broker_twin.py compares, field by field, the message pushed here with
  the one ``apply_async`` pushes for the same run.
* Otherwise (another broker, task-sent events on, a publish signal listened to, flows, a
  queue declared with an expiry, a delayed message), each run goes through Celery, inside a
  kombu batch. If pushing the copies fails, their runs are handed to Celery, which retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.models import Agent

logger = logging.getLogger("conveyor.broker")


@dataclass(frozen=True, slots=True)
class Message:
    execution_id: int
    agent: Agent
    attempt: int
    task_id: str


def publish_many(messages: list[Message]) -> int:
    """Publish "run execution X" for each message's attempt, in one pipelined round trip to a
    Redis broker (one publication each, batched by kombu, to any other). Returns how many were
    pushed as copies."""
    from config.celery import app

    if not messages:
        return 0
    channel = _copy_channel(app)
    through_celery, copies = [], []
    queues = set(_declared)
    for m in messages:
        queue = m.agent.queue
        if (
            channel is None
            or getattr(m.agent.kind_impl, "is_flow", False)
            # kombu sets an expiry on such a queue at every publication
            or _expires(app, channel, queue)
            # the first of each queue: Celery declares the queue, as it always does
            or queue not in queues
        ):
            through_celery.append(m)
            queues.add(queue)
        else:
            copies.append(m)
    if through_celery:
        _through_celery(app, through_celery)
        if channel is not None:
            _declared.update(m.agent.queue for m in through_celery)
    if copies:
        try:
            _push(channel, list(_copies(app, channel, copies)))
        except Exception:
            # Celery retries a publication the broker did not take (task_publish_retry): hand
            # these to it, on a connection of its own. A message the pipeline did push is then
            # sent twice, which is harmless (the claim runs one attempt once).
            logger.warning(
                "publishing copies failed, sending them through Celery",
                exc_info=True,
                extra={"action": "publish_copies_failed", "count": len(copies)},
            )
            _forget_copy_channel(failed=True)
            _through_celery(app, copies)
    return len(copies)


def _push(channel, pushes: list[tuple[str, str]]) -> None:
    """``LPUSH key payload`` for each of ``pushes``, in one round trip, on this thread's own
    connection to the broker (made like the channel's, with its settings). A redis-py client
    costs twice a command's own CPU around it (taking a connection from its pool and checking
    it, its retries): ~90 us a run on a slow machine."""
    connection = _kept.redis
    if connection is None:
        with channel.conn_or_acquire() as client:
            pool = client.connection_pool
        connection = _kept.redis = pool.connection_class(**pool.connection_kwargs)
    if len(pushes) == 1:
        connection.send_command("LPUSH", *pushes[0])
    else:
        connection.send_packed_command(
            connection.pack_commands([("LPUSH", key, payload) for key, payload in pushes])
        )
    for _ in pushes:  # each reply, an error included (raised)
        connection.read_response()


def _expires(app, channel, queue: str) -> bool:
    """Whether ``queue`` is declared with an expiry (``task_queues``, or on the channel): kombu
    then sets the expiry on the queue's lists at every publication, which a copy does not."""
    declared = app.amqp.queues.get(queue)
    return queue in channel._expires or (declared is not None and declared.expires is not None)


def _through_celery(app, messages: list[Message]) -> None:
    from .services import enqueue_through_celery

    with app.producer_or_acquire() as producer, producer.batch():
        for m in messages:
            enqueue_through_celery(
                m.execution_id, m.agent, attempt=m.attempt, task_id=m.task_id, producer=producer
            )


class _Kept(threading.local):
    # This thread's connection to the broker for the copies, its channel (None: not Redis), and
    # what it was made for: Celery's pool of connections (made anew when the broker settings
    # change, and in a forked process) and the process.
    connection = None
    channel = None
    pool = None
    pid: int | None = None
    # Its own connection to the Redis server, which the copies are pushed on (``_push``).
    redis = None
    # When the broker last refused it (monotonic seconds): every message goes through Celery
    # for COPY_PAUSE seconds, rather than each publication paying a failed attempt first.
    failed_at: float | None = None


_kept = _Kept()


def _copy_channel(app):
    """The Redis channel copies are pushed through, or None when every message must go through
    Celery (another broker, task-sent events on, a publish signal listened to).

    Each thread keeps its own connection, made again when Celery makes a new pool of its own
    (in a forked process, or for new broker settings): taking a producer from Celery's pool and
    giving it back costs more than building the copy itself.
    """
    from celery import signals

    if app.conf.task_send_sent_event:
        return None
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return None
    pool = app.pool
    if _kept.pool is not pool or _kept.pid != os.getpid():
        _forget_copy_channel()
        _kept.failed_at = None
    if _kept.connection is None:
        if _kept.failed_at is not None and time.monotonic() - _kept.failed_at < COPY_PAUSE:
            return None
        connection = app.connection_for_write()
        _kept.connection, _kept.pool, _kept.pid = connection, pool, os.getpid()
        if connection.transport.driver_type == "redis":
            try:
                _kept.channel = connection.default_channel
                _kept.failed_at = None
            except Exception:
                # Celery's own publication retries, then says why it failed.
                _forget_copy_channel(failed=True)
    return _kept.channel


#: Seconds every message goes through Celery after the broker refused the connection for copies.
COPY_PAUSE = 10.0


def _forget_copy_channel(*, failed: bool = False) -> None:
    """Close this thread's connection for copies; a later publication makes a new one (after
    COPY_PAUSE seconds when the broker ``failed``)."""
    connection, _kept.connection, _kept.channel = _kept.connection, None, None
    redis, _kept.redis = _kept.redis, None
    if failed:
        _kept.failed_at = time.monotonic()
    if _kept.pid != os.getpid():
        return  # made by the parent process: its sockets are the parent's to close
    for close in (connection and connection.release, redis and redis.disconnect):
        if close:
            try:
                close()
            except Exception:
                logger.debug("closing the connection for copies failed", exc_info=True)


#: SHA-256 of the source of kombu's Redis ``Channel._put`` (kombu 5.7.0), whose steps the copies
#: repeat (the priority queue's key, ``dumps`` of the message, the expiry left to Celery);
#: tests/executions/test_broker_twin.py fails when kombu's changes, so that an upgrade is checked
#: against it (the twin test there compares what the two ways write, message by message).
KOMBU_PUT_SHA256 = "1c0cf9749576614c3c62223ac59372df418ed4274d791fcd8f7e5ad7994ce72c"

# The queues this process has published to through Celery (which declared them).
_declared: set[str] = set()
# The last message Celery built here: its headers, properties and body, by what they depend on
# besides what each copy sets (the thread's reply address, the task being run, if any).
_last_template: tuple[tuple, tuple[dict, dict, tuple]] | None = None


def _template(app, message: Message) -> tuple[dict, dict, tuple]:
    """The headers, properties and body Celery builds for ``message`` (``apply_async`` through
    ``services.enqueue``: the same arguments)."""
    from kombu.entity import maybe_delivery_mode

    from .tasks import run_execution

    global _last_template

    root_id = parent_id = None
    parent = app.current_worker_task
    if parent:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    depends_on = (app.thread_oid, root_id, parent_id)
    if _last_template is not None and _last_template[0] == depends_on:
        return _last_template[1]
    options = run_options(message.execution_id, message.agent)
    headers, properties, body, _ = app.amqp.as_task_v2(
        message.task_id,
        run_execution.name,
        options["args"],
        options["kwargs"],
        retries=message.attempt,
        reply_to=app.thread_oid,
        time_limit=options["time_limit"],
        soft_time_limit=options["soft_time_limit"],
        root_id=root_id,
        parent_id=parent_id,
        ignore_result=run_execution.ignore_result,
    )
    # What kombu adds at publication, from a setting Celery also reads once.
    properties = {
        **properties,
        "delivery_mode": maybe_delivery_mode(app.conf.task_default_delivery_mode),
    }
    _last_template = (depends_on, (headers, properties, body))
    return headers, properties, body


def run_options(execution_id: int, agent: Agent) -> dict:
    """What "run execution X" is sent with (``apply_async``'s arguments): the execution, the
    agent (the worker claims with the agent it keeps, if still this version), the agent's queue,
    priority and time limits."""
    from django.conf import settings

    return {
        "args": [execution_id],
        "kwargs": {"agent": agent.pk},
        "queue": agent.queue,
        # The Redis transport serves lower numbers first; an agent's priority is "higher first".
        "priority": 9 - agent.priority,
        "soft_time_limit": agent.timeout,
        "time_limit": agent.timeout + settings.CONVEYOR_TIME_LIMIT_GRACE,
    }


def _copies(app, channel, messages: list[Message]):
    """(Redis key, encoded message) for each of ``messages``: the message Celery builds for the
    first, with each one's own ids, attempt, agent, queue, priority and time limits."""
    from kombu.utils.json import dumps
    from kombu.utils.uuid import uuid

    headers, properties, body = _template(app, messages[0])
    own_root = headers["root_id"] == headers["id"]
    encoding = channel.body_encoding
    embed = body[2]
    for m in messages:
        options = run_options(m.execution_id, m.agent)
        args, kwargs = options["args"], options["kwargs"]
        priority, queue = options["priority"], options["queue"]
        key = channel._q_for_pri(
            queue, channel._get_message_priority({"properties": {"priority": priority}})
        )
        encoded, body_encoding = channel.encode_body(dumps((args, kwargs, embed)), encoding)
        message_headers = {
            **headers,
            "id": m.task_id,
            "root_id": m.task_id if own_root else headers["root_id"],
            "retries": m.attempt,
            "timelimit": [options["time_limit"], options["soft_time_limit"]],
            # Celery's saferepr of a list of one number and a dict of one: their repr
            "argsrepr": repr(args),
            "kwargsrepr": repr(kwargs),
        }
        message_properties = {
            **properties,
            "correlation_id": m.task_id,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": body_encoding,
            "delivery_tag": uuid(),
        }
        yield (
            key,
            dumps(
                {
                    "body": encoded,
                    "content-encoding": "utf-8",
                    "content-type": "application/json",
                    "headers": message_headers,
                    "properties": message_properties,
                }
            ),
        )
