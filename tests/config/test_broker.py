"""Conveyor's Redis transport (config/broker.py): an entry on a queue list that cannot be read is
logged and set aside on ``<queue>.malformed``, and consuming goes on.

The helpers are tested on their own; the transport with a kombu consumer in this process against
the suite's Redis (no Celery worker: tests/config/test_broker_e2e.py runs one).
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager, suppress

import pytest
import redis
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.transport import pyamqp
from kombu.transport import redis as kombu_redis

from config import broker
from config.celery import app
from ops.system import PRIORITY_SEPARATOR, queue_keys
from tests.upstream import source_sha256


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def envelope(queue: str, content: object = None, **changes) -> dict:
    """A message as kombu's Redis transport stores it: ``content`` as JSON, base64-encoded, in
    its body. ``changes`` replace top-level fields (``...`` removes one)."""
    message = {
        "body": b64(json.dumps(content if content is not None else {"n": 1}).encode()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    for field, value in changes.items():
        if value is ...:
            del message[field]
        else:
            message[field] = value
    return message


def entry(message: dict) -> bytes:
    return json.dumps(message).encode()


def without_property(name: str) -> Callable[[str], bytes]:
    def make(queue: str) -> bytes:
        message = envelope(queue)
        del message["properties"][name]
        return entry(message)

    return make


# Entries that kombu's own transport cannot hand to a consumer: each used to stop the worker.
UNREADABLE: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda q: b"this is not JSON",
    "not UTF-8": lambda q: b"\xff\xfe\x00 binary \x80",
    "empty": lambda q: b"",
    "a JSON list": lambda q: b"[1, 2, 3]",
    "a JSON number": lambda q: b"42",
    "a JSON string": lambda q: b'"run execution 7"',
    "JSON null": lambda q: b"null",
    "an envelope without properties": lambda q: entry(envelope(q, properties=...)),
    "properties that are not an object": lambda q: entry(envelope(q, properties="x")),
    "an envelope without a delivery tag": without_property("delivery_tag"),
    "an envelope without delivery info": without_property("delivery_info"),
    "a body that is not base64": lambda q: entry(envelope(q, body="!!! not base64 !!!")),
}


@pytest.fixture
def queue(broker_redis):
    """A queue of this test's own, and its keys removed afterwards (with any message of it that
    a failed test left unacknowledged)."""
    name = f"{settings.CONVEYOR_EXECUTIONS_QUEUE}-broker-{uuid.uuid4().hex[:8]}"
    yield name
    broker_redis.delete(*queue_keys(name), broker.malformed_key(name), f"_kombu.binding.{name}")
    for tag, raw in broker_redis.hgetall("unacked").items():
        if name.encode() in raw:
            broker_redis.hdel("unacked", tag)
            broker_redis.zrem("unacked_index", tag)


@contextmanager
def consuming(queue: str, handler: Callable | None = None):
    """A kombu consumer of ``queue`` (prefetch 1, as Conveyor's workers) on the broker URL;
    yields ``(connection, bodies)``. ``handler(message)`` runs first on each message."""
    bodies: list = []

    def on_message(message):
        if handler is not None:
            handler(message)
        bodies.append(message.decode())
        message.ack()

    with Connection(settings.CELERY_BROKER_URL) as conn:
        exchange = Exchange(queue, type="direct")
        with conn.Consumer(
            Queue(queue, exchange, routing_key=queue), on_message=on_message, prefetch_count=1
        ):
            yield conn, bodies


def drain(conn: Connection, bodies: list, count: int, timeout: float = 10) -> None:
    """Consume until ``count`` messages were taken (as a worker's loop does)."""
    deadline = time.monotonic() + timeout
    while len(bodies) < count:
        assert time.monotonic() < deadline, f"only {len(bodies)} of {count} messages arrived"
        with suppress(TimeoutError):
            conn.drain_events(timeout=0.5)


def set_aside(broker_redis, queue: str) -> list[bytes]:
    return broker_redis.lrange(broker.malformed_key(queue), 0, -1)


# --- Helpers ----------------------------------------------------------------------------------


def test_a_payload_is_shown_escaped_on_one_line():
    assert broker.describe(b'{"a":\n1}\xff\x00') == r"""b'{"a":\n1}\xff\x00'"""


def test_a_long_payload_is_shown_cut_with_its_length():
    shown = broker.describe(b"x" * 5000)
    assert shown == "b'" + "x" * broker.SHOWN_BYTES + "'... (5000 bytes)"


def test_an_error_is_described_on_one_line():
    assert broker.describe_error(KeyError("id")) == "KeyError: 'id'"
    assert broker.describe_error(ValueError("bad\nvalue")) == r"ValueError: bad\nvalue"
    assert len(broker.describe_error(ValueError("x" * 1000))) == 300


def test_a_queues_unreadable_messages_go_to_a_list_next_to_it():
    assert broker.malformed_key("executions") == "executions.malformed"


def test_only_an_error_of_the_broker_itself_is_left_to_kombu():
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.default_channel
        assert isinstance(channel, broker.Channel)
        assert channel._is_broker_error(redis.ConnectionError("gone"))
        assert channel._is_broker_error(redis.TimeoutError("slow"))
        assert channel._is_broker_error(ConnectionResetError())
        assert channel._is_broker_error(redis.ResponseError("WRONGTYPE"))
        # kombu counts KeyError as a connection error; from a message it is the message's.
        assert not channel._is_broker_error(KeyError("properties"))
        assert not channel._is_broker_error(ValueError("Expecting value"))
        assert not channel._is_broker_error(TypeError("'int' object is not subscriptable"))


def test_the_copied_brpop_read_matches_the_installed_kombu():
    """config/broker.py copies kombu's Channel._brpop_read: a kombu that changed it needs the
    copy brought up to date (then update KOMBU_BRPOP_READ_SHA256)."""
    assert source_sha256(kombu_redis.Channel._brpop_read) == broker.KOMBU_BRPOP_READ_SHA256


def test_the_repeated_conn_or_acquire_matches_the_installed_kombu():
    """config/broker.py repeats kombu's Channel.conn_or_acquire with a kept client: a kombu
    that changed it needs the repetition checked (then update KOMBU_CONN_OR_ACQUIRE_SHA256)."""
    assert source_sha256(kombu_redis.Channel.conn_or_acquire) == broker.KOMBU_CONN_OR_ACQUIRE_SHA256


def test_a_channel_hands_out_one_client_until_its_pool_changes():
    with Connection(settings.CELERY_BROKER_URL) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        given = object()
        with channel.conn_or_acquire(given) as client:
            assert client is given
        channel._pool = None  # as kombu leaves it after closing its pools
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool
            assert third.ping()


# --- Which URLs use it ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://redis.example.com:6380/0", "redis+socket:///tmp/r.sock"],
)
def test_every_redis_url_form_uses_conveyors_transport(url):
    assert Connection(url).get_transport_cls() is broker.Transport


def test_the_workers_broker_connection_uses_it():
    with app.connection_for_read() as conn:
        assert isinstance(conn.transport, broker.Transport)


def test_a_rediss_url_keeps_tls():
    # kombu turns TLS on for the "rediss" alias; with Celery's broker_transport set to a class
    # instead, it would not.
    assert Connection("rediss://redis.example.com:6380/0").ssl


def test_a_rabbitmq_url_keeps_kombus_transport():
    assert Connection("amqp://guest@127.0.0.1:5672//").get_transport_cls() is pyamqp.Transport


# --- Consuming --------------------------------------------------------------------------------


def test_a_valid_message_is_delivered_as_before(broker_redis, queue):
    with consuming(queue) as (conn, bodies):
        broker_redis.lpush(queue, entry(envelope(queue, content={"n": 1})))
        drain(conn, bodies, 1)
    assert bodies == [{"n": 1}]
    assert set_aside(broker_redis, queue) == []


@pytest.mark.parametrize("kind", UNREADABLE)
def test_an_unreadable_entry_is_set_aside_and_the_next_message_delivered(
    broker_redis, queue, kind, caplog
):
    raw = UNREADABLE[kind](queue)
    with consuming(queue) as (conn, bodies):
        broker_redis.lpush(queue, raw)
        broker_redis.lpush(queue, entry(envelope(queue, content={"after": kind})))
        with caplog.at_level(logging.WARNING, logger="conveyor.broker"):
            drain(conn, bodies, 1)

    assert bodies == [{"after": kind}]
    assert set_aside(broker_redis, queue) == [raw]
    assert broker_redis.llen(queue) == 0
    assert not any(queue.encode() in value for value in broker_redis.hvals("unacked"))
    [record] = [r for r in caplog.records if r.name == "conveyor.broker"]
    assert record.levelname == "WARNING" and record.queue == queue


def test_the_warning_names_the_queue_the_error_and_the_payload(broker_redis, queue, caplog):
    with consuming(queue) as (conn, bodies):
        broker_redis.lpush(queue, b"not JSON\nFAKE LOG LINE \x1b[31m")
        broker_redis.lpush(queue, entry(envelope(queue)))
        with caplog.at_level(logging.WARNING, logger="conveyor.broker"):
            drain(conn, bodies, 1)

    [record] = [r for r in caplog.records if r.name == "conveyor.broker"]
    message = record.getMessage()
    assert message == (
        f"unreadable message on queue {queue!r} set aside in '{queue}.malformed' "
        "(JSONDecodeError: Expecting value: line 1 column 1 (char 0)): "
        r"b'not JSON\nFAKE LOG LINE \x1b[31m'"
    )
    assert "\n" not in message and "\x1b" not in message
    assert record.exc_info is None  # nothing to add to a decoding error


def test_an_entry_on_a_priority_list_is_set_aside_under_its_queue_name(broker_redis, queue):
    with consuming(queue) as (conn, bodies):
        broker_redis.lpush(f"{queue}{PRIORITY_SEPARATOR}6", b"not JSON")
        # Lists are served in priority order: this one after the other.
        broker_redis.lpush(f"{queue}{PRIORITY_SEPARATOR}9", entry(envelope(queue)))
        drain(conn, bodies, 1)
    assert set_aside(broker_redis, queue) == [b"not JSON"]


def test_a_message_the_consumer_fails_on_is_set_aside_and_acknowledged(broker_redis, queue, caplog):
    def choke_on_the_first(message):
        if message.decode() == {"n": 1}:
            raise ValueError("not enough values to unpack (expected 3, got 1)")

    first = envelope(queue, content={"n": 1})
    with consuming(queue, choke_on_the_first) as (conn, bodies):
        broker_redis.lpush(queue, entry(first))
        broker_redis.lpush(queue, entry(envelope(queue, content={"n": 2})))
        with caplog.at_level(logging.WARNING, logger="conveyor.broker"):
            # Prefetch 1: the second arrives only if the first was taken off the consumer.
            drain(conn, bodies, 1)

    assert bodies == [{"n": 2}]
    assert set_aside(broker_redis, queue) == [entry(first)]
    # Acknowledged: not left in the unacknowledged hash to be delivered again.
    assert not broker_redis.hexists("unacked", first["properties"]["delivery_tag"])
    [record] = [r for r in caplog.records if r.name == "conveyor.broker"]
    assert "ValueError: not enough values to unpack" in record.getMessage()
    assert record.exc_info is not None  # the consumer's traceback


def test_a_broker_error_while_handing_over_is_left_to_kombu(broker_redis, queue):
    def broker_gone(message):
        raise redis.ConnectionError("Connection reset by peer")

    with consuming(queue, broker_gone) as (conn, bodies):
        broker_redis.lpush(queue, entry(envelope(queue)))
        with pytest.raises(redis.ConnectionError):
            drain(conn, bodies, 1)
    # kombu's own handling: the consumer reconnects and the message is delivered again.
    assert set_aside(broker_redis, queue) == []


def test_the_set_aside_list_keeps_the_newest(broker_redis, queue, monkeypatch):
    monkeypatch.setattr(broker, "MALFORMED_KEEP", 3)
    with consuming(queue) as (conn, bodies):
        for n in range(5):
            broker_redis.lpush(queue, f"garbage {n}".encode())
        broker_redis.lpush(queue, entry(envelope(queue)))
        drain(conn, bodies, 1)
    assert set_aside(broker_redis, queue) == [b"garbage 4", b"garbage 3", b"garbage 2"]
