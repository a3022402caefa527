"""The benchmarks' CPU meter measures the processes between its two readings, not the work of
listing them (the Postgres backends are listed by a query on the benchmark's own connection)."""

from __future__ import annotations

import os
import time

from bench.common import CpuMeter

LISTING = 0.2  # CPU seconds each listing burns in this process


def burn(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_listing_the_processes_is_not_measured():
    listings = []

    def this_process_listed_at_a_cost():
        burn(LISTING)
        listings.append(1)
        return [os.getpid()]

    meter = CpuMeter({"me": this_process_listed_at_a_cost})
    meter.start()
    used = meter.stop()["me"]

    assert len(listings) == 2  # listed at the start and again at the end, for new processes
    assert 0 <= used < LISTING / 2


def test_the_work_between_the_readings_is_measured():
    pids = [os.getpid()]
    meter = CpuMeter({"me": lambda: list(pids)})
    meter.start()
    burn(LISTING)
    used = meter.stop()["me"]

    assert used >= LISTING
