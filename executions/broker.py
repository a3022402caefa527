"""Publishing many runs at once.

``services.enqueue`` publishes one run through Celery (``apply_async``): routing, options and the
message built by ``app.amqp.as_task_v2``, then kombu's producer. That costs ~0.4 ms of CPU a
message, which is most of the time of a batch of 1,000 runs (bench/batch.py) or of a burst of
schedules. :func:`publish_many` publishes a list of runs with one pipelined round trip:

* On a Redis broker, the runs of one agent and attempt share one message but for their ids.
  The first of each group goes through Celery as any other (it declares the queue, as Celery
  does), and the message Celery's own ``as_task_v2`` builds for it is the template of the
  others: each is a copy with its own task id and execution id, encoded as kombu's Redis channel
  encodes a message (its ``encode_body``, its priority queues) and pushed in the same pipeline.
  tests/executions/test_broker_twin.py compares, field by field, the message pushed here with
  the one ``apply_async`` pushes for the same run.
* Otherwise (another broker, task-sent events on, a publish signal listened to, flows, a
  queue declared with an expiry), each run
  goes through ``services.enqueue`` inside a kombu batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.models import Agent


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

    from .services import enqueue

    if not messages:
        return 0
    with app.producer_or_acquire() as producer:
        channel = _redis_channel(app, producer)
        one_by_one, groups = [], {}
        for m in messages:
            if (
                channel is None
                or getattr(m.agent.kind_impl, "is_flow", False)
                # kombu sets an expiry on such a queue at every publication
                or m.agent.queue in channel._expires
            ):
                one_by_one.append(m)
            else:
                groups.setdefault((m.agent.pk, m.attempt), []).append(m)
        # Through Celery: every run that cannot be copied, and the first of each group.
        with producer.batch():
            for m in [*one_by_one, *(group[0] for group in groups.values())]:
                enqueue(
                    m.execution_id, m.agent, attempt=m.attempt, task_id=m.task_id, producer=producer
                )
        pushes = [push for group in groups.values() for push in _pushes(app, channel, group)]
        if pushes:
            with channel.conn_or_acquire() as client, client.pipeline(False) as pipeline:
                for key, payload in pushes:
                    pipeline.lpush(key, payload)
                pipeline.execute()
    return len(pushes)


def _redis_channel(app, producer):
    """The producer's kombu Redis channel, when a message may be built here as Celery would."""
    from celery import signals

    if producer.connection.transport.driver_type != "redis":
        return None
    if app.conf.task_send_sent_event:
        return None
    if signals.before_task_publish.receivers or signals.after_task_publish.receivers:
        return None
    return producer.channel


def _template(app, message: Message) -> tuple[dict, dict, tuple]:
    """The headers, properties and body Celery builds for ``message`` (``apply_async`` through
    ``services.enqueue``: the same arguments)."""
    from django.conf import settings

    from .tasks import run_execution

    agent = message.agent
    root_id = parent_id = None
    parent = app.current_worker_task
    if parent:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    headers, properties, body, _ = app.amqp.as_task_v2(
        message.task_id,
        run_execution.name,
        [message.execution_id],
        {"agent": agent.pk},
        retries=message.attempt,
        reply_to=app.thread_oid,
        time_limit=agent.timeout + settings.CONVEYOR_TIME_LIMIT_GRACE,
        soft_time_limit=agent.timeout,
        root_id=root_id,
        parent_id=parent_id,
        ignore_result=run_execution.ignore_result,
    )
    return headers, properties, body


def _pushes(app, channel, group: list[Message]):
    """(Redis key, encoded message) for every message of ``group`` but the first (one agent,
    one attempt), each a copy of the first's with its own ids."""
    from kombu.entity import maybe_delivery_mode
    from kombu.utils.json import dumps
    from kombu.utils.uuid import uuid

    first = group[0]
    agent = first.agent
    headers, properties, body = _template(app, first)
    own_root = headers.get("root_id") == first.task_id
    priority = 9 - agent.priority
    queue = agent.queue
    key = channel._q_for_pri(
        queue, channel._get_message_priority({"properties": {"priority": priority}})
    )
    delivery_mode = maybe_delivery_mode(app.conf.task_default_delivery_mode)
    encoding = channel.body_encoding
    _, kwargs, embed = body
    for m in group[1:]:
        message_headers = {
            **headers,
            "id": m.task_id,
            "root_id": m.task_id if own_root else headers["root_id"],
            "argsrepr": repr([m.execution_id]),
        }
        encoded, body_encoding = channel.encode_body(
            dumps(([m.execution_id], kwargs, embed)), encoding
        )
        yield (
            key,
            dumps(
                {
                    "body": encoded,
                    "content-encoding": "utf-8",
                    "content-type": "application/json",
                    "headers": message_headers,
                    "properties": {
                        **properties,
                        "correlation_id": m.task_id,
                        "delivery_mode": delivery_mode,
                        "delivery_info": {"exchange": "", "routing_key": queue},
                        "priority": priority,
                        "body_encoding": body_encoding,
                        "delivery_tag": uuid(),
                    },
                }
            ),
        )
