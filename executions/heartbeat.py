"""Heartbeats: a running attempt shows, in its own row, that its worker is alive.

While an agent runs, a background thread of the worker process stamps the execution's
``heartbeat_at`` every ``CONVEYOR_HEARTBEAT_INTERVAL`` seconds (the claim stamps it first). The
reaper (``executions.recovery.reap_lost_attempts``) takes an attempt whose stamp is older than
``CONVEYOR_HEARTBEAT_TIMEOUT`` for one whose worker died, whatever the agent's own timeout: a
worker killed with SIGKILL, a machine that lost power, a pool child the kernel killed for memory.

The thread is the process's own, not the agent's: it stamps while the agent waits on the network,
sleeps or computes in Python (the interpreter switches threads every few milliseconds), so a live
but slow attempt keeps its stamp fresh. Only code that holds the interpreter lock for longer than
the timeout (a C extension that never releases it) would look dead.

Cost: one thread per worker process, started at its first run; per run, two dictionary writes
under a lock. An attempt shorter than the interval is never stamped by the thread at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from .models import Execution

logger = logging.getLogger("conveyor.heartbeat")


class Heartbeat:
    """The attempts running in this process, and the thread that stamps them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (execution pk, attempt number) -> monotonic time of its last stamp.
        self._running: dict[tuple[int, int], float] = {}
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def beating(self, *, execution_id: int, attempt: int):
        """Stamp this attempt's heartbeat while the block runs (the claim stamped it last)."""
        key = (execution_id, attempt)
        self._ensure_thread()
        with self._lock:
            self._running[key] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(key, None)

    def due(self, now: float) -> list[tuple[int, int]]:
        """The attempts whose last stamp is at least one interval old, marked as stamped now."""
        interval = settings.CONVEYOR_HEARTBEAT_INTERVAL
        with self._lock:
            due = [key for key, last in self._running.items() if now - last >= interval]
            for key in due:
                self._running[key] = now
        return due

    def stamp(self, keys: list[tuple[int, int]]) -> int:
        """Write the stamps (one UPDATE per attempt; only while it is still this attempt's
        run). Returns how many rows took it."""
        at = timezone.now()
        stamped = 0
        for pk, attempt in keys:
            stamped += Execution.objects.filter(
                pk=pk, status=Execution.Status.RUNNING, attempt=attempt
            ).update(heartbeat_at=at)
        return stamped

    def _ensure_thread(self) -> None:
        # Threads do not survive a fork: a pool child starts its own at its first run.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="conveyor-heartbeat", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        # A quarter of the interval: a stamp is never more than 1.25 intervals late.
        tick = settings.CONVEYOR_HEARTBEAT_INTERVAL / 4
        wake = threading.Event()  # never set: its wait() is the thread's timer
        while True:
            wake.wait(tick)
            due = self.due(time.monotonic())
            if not due:
                continue
            try:
                close_old_connections()
                self.stamp(due)
            except DatabaseError:
                # The database is restarting or unreachable: drop this thread's connection and
                # stamp again at the next tick. The reaper waits out the same outage.
                logger.warning(
                    "heartbeat not written",
                    exc_info=True,
                    extra={"action": "heartbeat_failed", "attempts": len(due)},
                )
                connection.close()
                with self._lock:
                    for key in due:
                        if key in self._running:
                            self._running[key] = 0.0


#: The process's heartbeat; the runner wraps each attempt in ``heartbeat.beating(...)``.
heartbeat = Heartbeat()
