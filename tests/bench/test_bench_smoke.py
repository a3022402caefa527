"""The benchmarks keep working: ``python -m bench`` runs every one of them at a tiny size (the
retention benchmark in a test of its own: it creates, fills and drops a database of its own).

It starts its own workers against the test database and the suite's Redis, exactly as
``make bench`` does against its own. Nothing here asserts a speed: only that each benchmark
ran both sides in every round and reported its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis
from django.conf import settings
from django.db import connection

from tests.stack import ROOT, database_url

needs_postgres = pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"],
    reason="the benchmarks measure Postgres backends; DATABASE_URL is not Postgres",
)

TINY = [
    "--throughput-n", "20", "--throughput-warmup", "5",
    "--latency-n", "6",
    "--producer-n", "5",
    "--retry-timing-n", "2", "--retry-timing-fail", "1", "--retry-timing-backoff-max", "1",
    "--memory-first", "10", "--memory-total", "40", "--memory-batch", "10",
    "--batch-runs", "30", "--batch-size", "12",
]  # fmt: skip
WITH_WORKERS = ["--only", "throughput,latency,producer,retry_timing,batch,memory"]
TINY_RETENTION = [
    "--only", "retention",
    "--retention-rows", "400", "--retention-days", "40", "--retention-agents", "10",
    "--retention-requests", "2", "--retention-insert-rate", "20",
    "--retention-baseline-seconds", "0.5",
]  # fmt: skip


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@needs_postgres
def test_every_benchmark_runs_both_sides_in_every_round(transactional_db, broker, tmp_path):
    out = tmp_path / "figures.json"
    client = redis.Redis.from_url(settings.REDIS_URL)
    before = set(client.scan_iter(match="*bench-*"))

    proc = bench("--json", str(out), *WITH_WORKERS, *TINY)

    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    figures = json.loads(out.read_text())

    throughput = figures["throughput"]
    assert len(throughput["rounds"]) == 3
    assert throughput["modes"] == ["drained", "live"]
    for r in throughput["rounds"]:
        assert r["raw"]["rate"] > 0
        for mode in ("drained", "live"):
            assert r[mode]["conveyor"]["rate"] > 0
            assert r[mode]["ratio"] == r[mode]["conveyor"]["rate"] / r["raw"]["rate"]
    cpu = throughput["cpu_ms_per_run"]
    for mode in ("drained", "live"):
        assert cpu[mode]["worker children"] > 0
        assert cpu[mode]["postgres backends"] > 0
    # Live, the producer creates the runs on the clock; drained, before it starts.
    assert cpu["live"]["producer"] > cpu["drained"]["producer"]
    assert cpu["raw"]["postgres backends"] == 0

    latency = figures["latency"]
    assert latency["n"] == 6
    for side in ("raw", "conveyor"):
        assert 0 < latency[side]["p50_ms"] <= latency[side]["p99_ms"]

    producer = figures["producer"]
    assert producer["rounds"] == 3
    medians = {side: producer["cpu_ms_per_run"][side]["median"] for side in ("raw", "conveyor")}
    assert all(m > 0 for m in medians.values())
    assert producer["ratio"] == medians["conveyor"] / medians["raw"]

    retry = figures["retry_timing"]
    # 2 runs x 1 retry x 3 rounds on each side; no retry starts before its wait is over.
    assert retry["raw"]["retries"] == retry["conveyor"]["retries"] == 6
    assert retry["conveyor"]["median_error_ms"] >= 0

    batch = figures["batch"]
    assert len(batch["rounds"]) == 3
    for r in batch["rounds"]:
        # 30 runs in requests of 12: three requests, each answered 202, every run succeeded.
        assert len(r["conveyor"]["call_seconds"]) == 3
        assert r["conveyor"]["all_ran_seconds"] > 0 and r["raw"]["publish_seconds"] > 0

    for side in ("raw", "conveyor"):
        readings = figures["memory"][side]["readings_mib"]
        assert [n for n, _ in readings] == [0, 10, 20, 30, 40]
        assert all(mib > 10 for _, mib in readings)

    # The run cleans up after itself: no agent or token of it is left behind.
    from django.contrib.auth import get_user_model

    from agents.models import Agent
    from api.models import ApiToken

    assert not Agent.objects.filter(owner__username="conveyor-bench").exists()
    assert not ApiToken.objects.filter(owner__username="conveyor-bench").exists()
    assert not get_user_model().objects.filter(username="conveyor-bench").exists()
    # ... and no queue of it, nor kombu's record of a queue's bindings, in Redis.
    left = set(client.scan_iter(match="*bench-*")) - before
    # ... nor a deadline kombu keeps for a binding table that is gone (the workers' remote
    # control queues'), which only a sweep an hour later, by a consumer still running, removes.
    deadlines = client.zrange("_kombu.binding_deadlines", 0, -1)
    unbound = [e for e in deadlines if not client.exists(b"_kombu.binding." + e)]
    client.close()
    assert left == set()
    assert unbound == []


@pytest.mark.slow
@pytest.mark.timeout(240)
@needs_postgres
def test_the_retention_benchmark_cleans_up_while_inserts_go_on(transactional_db, broker, tmp_path):
    out = tmp_path / "figures.json"

    proc = bench("--json", str(out), *TINY_RETENTION, timeout=200)

    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    retention = json.loads(out.read_text())["retention"]
    # About a quarter of the rows ended over 30 days ago, most of them succeeded: they go.
    assert 0 < retention["cleanup"]["rows"]["executions"] < 400
    assert retention["inserts"]["during_cleanup"]["failed"] == 0
    assert retention["inserts"]["before_cleanup"]["n"] > 0
    for when in ("before", "after"):
        assert set(retention[when]) == {"dashboard 7d", "/metrics"}
    # Its database is gone.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
            [connection.settings_dict["NAME"] + "_retention_"],
        )
        assert cursor.fetchall() == []


def test_fewer_than_three_rounds_are_refused():
    proc = bench("--rounds", "2", timeout=60)

    assert proc.returncode != 0
    assert "at least 3" in proc.stderr
