"""Conveyor's Redis transport: a message a worker cannot read is set aside, never fatal.

kombu's Redis transport pops a list entry off a queue (``BRPOP``), decodes it as a JSON envelope
and base64-decodes its body before Celery sees it. An entry that fails there (not JSON, not an
envelope, a body that is not base64) raises out of the worker's consumer and the worker exits
("Unrecoverable error"); so do some envelopes that Celery's consumer chokes on (a body that is
not an ``[args, kwargs, embed]`` list, headers that are not an object), and an envelope missing
a header Celery reads (``id``) makes the worker reconnect to the broker over and over.

This transport is kombu's with one change, in ``Channel._brpop_read``: when handing an entry
over fails for a reason other than the broker itself, the entry is

* logged as a warning: the queue, the error and the first ``SHOWN_BYTES`` bytes (escaped);
* pushed, exactly as it was read, onto the Redis list ``<queue>.malformed`` (newest first,
  trimmed to the last ``MALFORMED_KEEP``), so that nothing is lost without a trace;
* acknowledged if it had been handed over, so that it is not delivered again;

and the worker goes on consuming. A valid message costs nothing more: the extra work happens
only once an exception has been raised. What Celery itself rejects and logs (an unknown task, a
content type other than JSON, a body that is not JSON) stays Celery's business.

One more change, for speed: kombu makes a new Redis client (~0.2 ms of CPU) each time a channel
needs one outside its event loop (``conn_or_acquire``): twice a message in a worker's main
process (taking it in and acknowledging it), once a publication. A channel here keeps one client
on its connection pool and hands it out instead; redis-py's clients may be shared, each command
takes a connection from the pool.

Importing this module makes it the transport of ``redis://``, ``rediss://`` and
``redis+socket://`` broker URLs (kombu's aliases ``redis`` and ``rediss``), so that every URL
form keeps kombu's own handling (TLS for ``rediss://``, the unix socket of ``redis+socket://``).
``config/settings.py`` imports it. Celery's ``broker_transport`` setting would not do: kombu
ignores it for ``redis+socket://`` URLs, and with it a ``rediss://`` URL loses kombu's default
TLS settings.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from queue import Empty

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

logger = logging.getLogger("conveyor.broker")

#: Suffix of the list where a queue's unreadable messages are set aside.
MALFORMED_SUFFIX = ".malformed"
#: How many set-aside messages each such list keeps (the newest).
MALFORMED_KEEP = 1000
#: How much of a set-aside message its log line shows.
SHOWN_BYTES = 200

#: SHA-256 of the source of kombu's ``Channel._brpop_read`` (kombu 5.7.0), whose steps
#: ``Channel._brpop_read`` below repeats; tests/config/test_broker.py fails when kombu's changes,
#: so that an upgrade is checked against it.
KOMBU_BRPOP_READ_SHA256 = "c42518699709f2df90f55a048fe6346612ae5527e5c4a6819f2c0920dc62088f"
#: The same for kombu's ``Channel.conn_or_acquire`` (kombu 5.7.0), which ``Channel`` below
#: repeats with a kept client.
KOMBU_CONN_OR_ACQUIRE_SHA256 = "25883caca6c4121e73463ac71db4a7037981634eb84b715c2280edaa609c080a"


def malformed_key(queue: str) -> str:
    """The Redis list where ``queue``'s unreadable messages are set aside."""
    return f"{queue}{MALFORMED_SUFFIX}"


def describe(item: bytes, limit: int = SHOWN_BYTES) -> str:
    """The first ``limit`` bytes of a raw entry, printable and on one line whatever they hold."""
    shown = repr(bytes(item[:limit]))
    return shown if len(item) <= limit else f"{shown}... ({len(item)} bytes)"


def describe_error(exc: BaseException) -> str:
    """``Type: message``, on one line and at most 300 characters."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return repr(text)[1:-1][:300]


class Channel(kombu_redis.Channel):
    _kept_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        """kombu's, with the channel's kept client instead of a new one each time."""
        if client:
            yield client
            return
        kept = self._kept_client
        if kept is None or kept.connection_pool is not self.pool:
            kept = self._kept_client = self._create_client()
        yield kept

    def _brpop_read(self, **options):
        """Read one BRPOP reply and hand its entry over, as kombu does (the method whose source
        KOMBU_BRPOP_READ_SHA256 fingerprints), except that the hand-over is guarded."""
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next read reconnects
                raise
            if not reply:
                raise Empty()
            key, raw = reply
            queue = bytes_to_str(key).rsplit(self.sep, 1)[0]  # a priority list's base queue
            self._queue_cycle.rotate(queue)
            self._hand_over(queue, raw)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # the connection is idle: kombu's moment for re-auth

    def _hand_over(self, queue: str, raw: bytes) -> None:
        payload = None
        try:
            payload = loads(bytes_to_str(raw))
            self.connection._deliver(payload, queue)
        except Exception as exc:
            if self._is_broker_error(exc):
                raise
            self._set_aside(queue, raw, payload, exc)

    def _is_broker_error(self, exc: Exception) -> bool:
        """Whether ``exc`` says the broker failed (kombu then reconnects), not the message.

        kombu counts a KeyError as a connection error (a stale file descriptor after a broker
        restart); raised while a message is handed over, it comes from the message.
        """
        errors = self.connection.connection_errors + self.connection.channel_errors
        return isinstance(exc, errors) and not isinstance(exc, KeyError)

    def _set_aside(self, queue: str, item: bytes, payload, exc: Exception) -> None:
        """Log an entry that could not be handed over and push it onto ``<queue>.malformed``."""
        key = malformed_key(queue)
        delivery_tag = self._delivery_tag_handed_over(payload)
        logger.warning(
            "unreadable message on queue %r set aside in %r (%s): %s",
            queue,
            key,
            describe_error(exc),
            describe(item),
            # Decoding errors say it all; an error from the consumer comes with its traceback.
            exc_info=exc if delivery_tag is not None else None,
            extra={"action": "broker_message_set_aside", "queue": queue},
        )
        with self.conn_or_acquire() as client:
            client.pipeline().lpush(key, item).ltrim(key, 0, MALFORMED_KEEP - 1).execute()
        if delivery_tag is not None:
            # Handed over (and recorded as unacknowledged) before the consumer failed on it:
            # acknowledged, or it would be delivered again and hold the worker's prefetch slot.
            self.qos.reject(delivery_tag, requeue=False)

    def _delivery_tag_handed_over(self, payload):
        """The delivery tag of ``payload`` if it was handed to the consumer (and not yet
        acknowledged), else None."""
        try:
            properties = payload["properties"]
            delivery_tag = properties["delivery_tag"]
            delivered = self.qos.get(delivery_tag)
        except (KeyError, TypeError):
            return None
        # The same envelope, not another message that carries the same tag.
        return delivery_tag if delivered.properties is properties else None


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
for _scheme in ("redis", "rediss"):
    TRANSPORT_ALIASES[_scheme] = TRANSPORT
