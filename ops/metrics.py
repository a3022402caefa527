"""Prometheus metrics, generated from aggregate queries at each scrape.

A fresh ``CollectorRegistry`` per request holds one :class:`ConveyorCollector`, so nothing is
kept between scrapes and every web process answers the same figures (they come from the
database and the broker, not from process memory).
"""

from __future__ import annotations

import math

from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import backlog, selectors, system


class ConveyorCollector:
    """A prometheus_client collector (it only needs ``collect``)."""

    def collect(self):
        snapshot = selectors.metrics_snapshot()

        executions = GaugeMetricFamily(
            "conveyor_executions",
            "Executions by current status and error category (empty when none).",
            labels=["status", "error_category"],
        )
        for (status, category), n in sorted(snapshot.by_status.items()):
            executions.add_metric([status, category], n)
        yield executions

        yield CounterMetricFamily(
            "conveyor_execution_attempts",
            "Attempts started, over every execution.",
            value=snapshot.attempts,
        )
        yield CounterMetricFamily(
            "conveyor_execution_retries",
            "Attempts beyond the first (automatic retries), over every execution.",
            value=snapshot.retries,
        )

        histogram = HistogramMetricFamily(
            "conveyor_execution_duration_seconds",
            "Duration of finished executions, per agent.",
            labels=["agent", "owner", "agent_uuid"],
        )
        for name, owner, uuid, cumulative, count, total in snapshot.durations.values():
            buckets = [
                (_bound(bound), n)
                for bound, n in zip(selectors.DURATION_BUCKETS, cumulative, strict=True)
            ]
            buckets.append(("+Inf", count))
            histogram.add_metric([name, owner, uuid], buckets, total)
        yield histogram

        yield GaugeMetricFamily(
            "conveyor_executions_running", "Executions running now.", value=snapshot.running
        )

        latency = HistogramMetricFamily(
            "conveyor_execution_start_latency_seconds",
            "Time from when a run could start (its creation, or the start time it asked for) to "
            "its first attempt's start, over every run that started (past hours' buckets from "
            "the rollups' histograms, within 1%).",
        )
        buckets = [
            (_bound(bound), n)
            for bound, n in zip(selectors.LATENCY_BUCKETS, snapshot.latency_le, strict=True)
        ]
        buckets.append(("+Inf", snapshot.latency_count))
        latency.add_metric([], buckets, snapshot.latency_sum)
        yield latency

        yield from _backlog(backlog.queue_backlog(now=timezone.now()))

        queues = selectors.queue_names()
        depths = system.queue_depths(queues)
        yield GaugeMetricFamily(
            "conveyor_broker_up",
            "1 when the broker (Redis or RabbitMQ) answered this scrape.",
            value=0 if depths.error else 1,
        )
        if not depths.error:
            depth = GaugeMetricFamily(
                "conveyor_queue_depth", "Messages waiting in a Celery queue.", labels=["queue"]
            )
            for queue, n in depths.depths.items():
                depth.add_metric([queue], n)
            yield depth
            set_aside = GaugeMetricFamily(
                "conveyor_queue_malformed",
                "Unreadable broker messages set aside in <queue>.malformed (Redis).",
                labels=["queue"],
            )
            for queue in depths.depths:
                set_aside.add_metric([queue], depths.malformed.get(queue, 0))
            yield set_aside
        # Only Redis tells this; on RabbitMQ the series is absent rather than a made-up 0.
        if depths.unacked is not None:
            yield GaugeMetricFamily(
                "conveyor_queue_unacked",
                "Messages handed to workers and not acknowledged yet (all queues).",
                value=depths.unacked,
            )


def _backlog(rows: list[backlog.QueueBacklog]):
    """Each queue's backlog and time to drain (ops.backlog, the rule the dashboard shows)."""
    window = int(backlog.RATE_WINDOW.total_seconds() // 60)
    recent = int(backlog.RECENT_WINDOW.total_seconds() // 60)
    families = {
        "queued": GaugeMetricFamily(
            "conveyor_queue_backlog",
            "Runs that could start now and that no worker has started (from the database).",
            labels=["queue"],
        ),
        "oldest_age": GaugeMetricFamily(
            "conveyor_queue_oldest_age_seconds",
            "How long the oldest run of the backlog has waited (0: none waits).",
            labels=["queue"],
        ),
        "running": GaugeMetricFamily(
            "conveyor_queue_running", "Runs of the queue running on a worker.", labels=["queue"]
        ),
        "rate": GaugeMetricFamily(
            "conveyor_queue_finished_per_second",
            f"Runs of the queue finished per second: the slower of the rates of the last {recent} "
            f"and {window} minutes, the one the time to drain uses.",
            labels=["queue"],
        ),
        "drain": GaugeMetricFamily(
            "conveyor_queue_drain_seconds",
            f"Time to drain the backlog: backlog / the slower of the rates of the last {recent} "
            f"and {window} minutes (0: empty; +Inf: runs wait and none finished in the last "
            f"{recent} minutes).",
            labels=["queue"],
        ),
    }
    for r in rows:
        drain = r.drain
        families["queued"].add_metric([r.queue], r.queued)
        families["oldest_age"].add_metric([r.queue], r.oldest_age or 0)
        families["running"].add_metric([r.queue], r.running)
        families["rate"].add_metric([r.queue], drain.per_minute / 60)
        seconds = {"empty": 0.0, "not_draining": math.inf}.get(drain.state, drain.seconds)
        families["drain"].add_metric([r.queue], seconds)
    yield from families.values()


def _bound(seconds: float) -> str:
    return f"{float(seconds):g}" if seconds != int(seconds) else f"{float(seconds):.1f}"
