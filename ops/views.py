"""Operators' pages and endpoints: the dashboard (staff), /healthz (anyone), /metrics (staff or
a bearer token).

The dashboard reads aggregates from ``ops.selectors`` and the broker's queue lengths from
``ops.system``; the workers panel, which needs a Celery broadcast, is a separate fragment that
the page loads after it has rendered (or renders at once from the few-seconds cache).
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from executions.models import Execution

from . import backlog as backlog_rules
from . import baseline, presence, selectors, system
from .charts import LINE_COLOURS, lines_svg, throughput_svg
from .metrics import ConveyorCollector

logger = logging.getLogger("conveyor.ops")

Status = Execution.Status
url = selectors.admin_executions_url


def operators_only(view):
    """Staff only. A visitor who is not signed in goes to the admin login; a signed-in user who
    is not staff gets the plain 403 page (templates/403.html), not a login form that cannot
    let them in."""
    staff_view = staff_member_required(view)

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.user.is_authenticated and not request.user.is_staff:
            raise PermissionDenied("This page is for operators.")
        return staff_view(request, *args, **kwargs)

    return wrapped


def _change_url(execution: Execution) -> str:
    return reverse("admin:executions_execution_change", args=[execution.pk])


@operators_only
@never_cache
def dashboard(request):
    window = selectors.WINDOWS.get(request.GET.get("window", ""))
    window = window or selectors.WINDOWS[selectors.DEFAULT_WINDOW]
    now = timezone.now()
    data = selectors.dashboard(window=window, now=now)
    since, ov = data.since, data.overview

    links = {
        "started": url(created_at__gte=since),
        "succeeded": url(created_at__gte=since, status__exact=Status.SUCCEEDED),
        "failed": url(created_at__gte=since, status__exact=Status.FAILED),
        "cancelled": url(created_at__gte=since, status__exact=Status.CANCELLED),
        "active": url(created_at__gte=since, status__in=",".join(Execution.ACTIVE_STATUSES)),
        "durations": url(created_at__gte=since, status__exact=Status.SUCCEEDED),
        **_live_links(),
        "dead_letters": url(status__exact=Status.FAILED, retried="no"),
    }
    if ov.p95 is not None:
        links["p95"] = url(
            created_at__gte=since, status__exact=Status.SUCCEEDED, slower_than=_secs(ov.p95)
        )
    if ov.p50 is not None:
        links["p50"] = url(
            created_at__gte=since, status__exact=Status.SUCCEEDED, slower_than=_secs(ov.p50)
        )

    failed_total = sum(n for _, _, n in data.failures) or 1
    failures = [
        {
            "label": label,
            "count": n,
            "share": n / failed_total,
            "url": url(
                created_at__gte=since, status__exact=Status.FAILED, error_category__exact=cat
            ),
        }
        for cat, label, n in data.failures
    ]
    busiest = [
        {"a": a, "url": url(created_at__gte=since, agent__id__exact=a.agent_id)}
        for a in data.busiest_agents
    ]
    failing = [
        {
            "a": a,
            "url": url(
                created_at__gte=since, agent__id__exact=a.agent_id, status__exact=Status.FAILED
            ),
        }
        for a in data.failing_agents
    ]
    depths = system.queue_depths(data.queues)
    # The workers seen reading each queue lately (ops.presence); None: Redis did not say.
    online = presence.queues_online(list(depths.depths)) or {}
    queues = [
        {
            "name": q,
            "depth": n,
            "url": url(agent__queue__exact=q, status__exact=Status.QUEUED),
            "workers": len(online[q]) if q in online else None,
        }
        for q, n in depths.depths.items()
    ]
    stuck_timeout = [
        {"e": e, "url": _change_url(e), "elapsed": (now - e.attempt_started_at).total_seconds()}
        for e in data.over_timeout
    ]
    stuck_queued = [
        {"e": e, "url": _change_url(e), "waiting": (now - (e.not_before or e.created_at))}
        for e in data.queued_long
    ]
    workers = system.workers()
    backlog = _backlog_context(data)
    return render(
        request,
        "ops/dashboard.html",
        {
            "capacity": selectors.capacity(),
            # Agents worse than their usual (ops.baseline), open regressions first opened first.
            "regressions": baseline.open_regressions(user=request.user),
            "d": data,
            "ov": ov,
            "live": data.live,
            "windows": selectors.WINDOWS.values(),
            "chart": throughput_svg(data.throughput, window),
            "unit": "hour" if window.bucket >= selectors.HOUR else "minute",
            "links": links,
            "failures": failures,
            "busiest": busiest,
            "failing": failing,
            "depths": depths,
            "queues": queues,
            "stuck_timeout": stuck_timeout,
            "stuck_queued": stuck_queued,
            "stuck_limit": selectors.STUCK_LIMIT,
            "stuck_queued_after": settings.CONVEYOR_STUCK_QUEUED_AFTER,
            "presence_ttl": presence.TTL,
            "unread_queues": [q["name"] for q in queues if q["workers"] == 0],
            "flower_url": settings.CONVEYOR_FLOWER_URL,
            **(_workers_context(workers) if workers is not None else {"workers": None}),
            **backlog,
        },
    )


def _live_links() -> dict:
    """The "Now" counts' links: the admin list of the runs of each active status."""
    return {
        "queued": url(status__exact=Status.QUEUED),
        "running": url(status__exact=Status.RUNNING),
        "retrying": url(status__exact=Status.RETRYING),
    }


def _backlog_now_context(rows: list[backlog_rules.QueueBacklog], together) -> dict:
    """The backlog panel's table (templates/ops/_backlog_now.html): each queue's backlog and
    time to drain now, and all queues' together."""
    # Queues where nothing waits, runs or finished lately are named in one line, not a row each.
    shown = [
        {"b": b, "url": url(agent__queue__exact=b.queue, status__in="queued,retrying")}
        for b in rows
        if b.queued or b.running or b.drain.finished
    ]
    return {
        "backlog_rows": shown,
        "quiet_queues": [b.queue for b in rows if not (b.queued or b.running or b.drain.finished)],
        "backlog_total": together,
        "rate_minutes": int(backlog_rules.RATE_WINDOW.total_seconds() // 60),
        "recent_minutes": int(backlog_rules.RECENT_WINDOW.total_seconds() // 60),
    }


def _backlog_context(data: selectors.Dashboard) -> dict:
    """The backlog panel: each queue's backlog and time to drain now, and two charts over the
    window: the runs waiting per bar and queue (from the samples, the highest of a bar's
    minutes), and the start latency's median and 95th percentile per bar."""
    from executions.templatetags.conveyor import duration

    window = data.window
    starts = [bar.start for bar in data.latency]
    waited = [s for s in data.samples if any(v for v in s.queued)]
    colours = dict(zip([s.queue for s in waited], _cycle(LINE_COLOURS, len(waited)), strict=True))
    unit = "hour" if window.bucket >= selectors.HOUR else "minute"
    return {
        **_backlog_now_context(data.backlog, data.backlog_total),
        "backlog_sampled": bool(data.samples),
        "backlog_chart": lines_svg(
            starts,
            [(s.queue, colours[s.queue], s.queued) for s in waited],
            window,
            label="Runs waiting per queue, " + _sampled(unit),
            format_value=lambda v: f"{v:g}" if v == int(v) else f"{v:.1f}",
        ),
        "backlog_colours": colours,
        "latency_chart": lines_svg(
            starts,
            [
                ("median", LINE_COLOURS[0], [b.p50 for b in data.latency]),
                ("95th percentile", LINE_COLOURS[1], [b.p95 for b in data.latency]),
            ],
            window,
            label=f"Start latency per {unit}: median and 95th percentile",
            format_value=lambda v: "0" if v == 0 else duration(v),
            seconds=True,
        ),
        "latency_colours": LINE_COLOURS[:2],
        "backlog_sampled_as": _sampled(unit),
    }


def _sampled(unit: str) -> str:
    """How the runs waiting chart's points were taken: a sample a minute shows what waited at
    that instant, not the most between two samples."""
    if unit == "minute":
        return "sampled once a minute"
    return f"sampled once a minute (the highest sample of each {unit})"


def _cycle(values: tuple, n: int) -> list:
    return [values[i % len(values)] for i in range(n)]


@operators_only
@never_cache
def backlog_panel(request):
    """The backlog table, polled by the dashboard every 10 s, with the "Now" counts swapped in
    beside it (out of band): each queue's backlog and time to drain now (ops.backlog: three
    queries with the queue names) and the active runs by status (one query). The charts stay
    as the page drew them: their samples come once a minute."""
    rows = backlog_rules.queue_backlog(now=timezone.now())
    return render(
        request,
        "ops/_backlog_now.html",
        {
            **_backlog_now_context(rows, backlog_rules.total(rows)),
            "live": selectors.live_counts(),
            "links": _live_links(),
            "oob": True,
        },
    )


@operators_only
@never_cache
def workers_panel(request):
    """The workers panel: who answered ``inspect active`` and what they run (cached a few s)."""
    return render(request, "ops/_workers.html", _workers_context(system.workers(refresh=True)))


def _workers_context(workers: system.Workers) -> dict:
    task_ids = [t.get("id") for tasks in workers.active.values() for t in tasks if t.get("id")]
    executions = selectors.executions_by_task_id(task_ids)
    rows = []
    for name, tasks in workers.active.items():
        running = []
        for task in tasks:
            execution = executions.get(task.get("id"))
            running.append(
                {
                    "task": task.get("name", ""),
                    "execution": execution,
                    "url": _change_url(execution) if execution else "",
                    "started": _from_timestamp(task.get("time_start")),
                }
            )
        rows.append({"name": name, "tasks": running})
    return {"workers": workers, "worker_rows": rows, "cache_seconds": system.WORKERS_CACHE_SECONDS}


@operators_only
@require_POST
def breaker_close_view(request):
    """The capacity panel's Close button: close an open circuit breaker by hand (logged with who
    did it) and let the runs waiting for it go."""
    from executions.capacity import breaker_close

    key = request.POST.get("key", "").strip()
    if not key:
        return HttpResponseBadRequest(
            "Say which breaker to close (key).\n", content_type="text/plain"
        )
    if breaker_close(key=key, by=request.user.get_username()):
        messages.success(request, f"Circuit breaker {key} closed: the runs waiting for it go now.")
    else:
        messages.info(request, f"Circuit breaker {key} was not open: nothing to close.")
    return redirect(f"{reverse('ops:dashboard')}#capacity")


@never_cache
def healthz(request):
    """200 {"database": "ok", "broker": "ok"}, or 503 naming what did not answer."""
    checks = {"database": _check_database(), "broker": system.ping_broker()}
    healthy = all(value == "ok" for value in checks.values())
    if not healthy:
        logger.warning("health check failed", extra={"action": "ops_unhealthy", **checks})
        # The reasons went to the log; anonymous callers only learn which part failed.
        checks = {k: v if v == "ok" else "unavailable" for k, v in checks.items()}
    return JsonResponse(checks, status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return "ok"


@never_cache
def metrics(request):
    """Prometheus text format, for staff sessions or ``Authorization: Bearer <token>``."""
    denied = _metrics_denied(request)
    if denied is not None:
        return denied
    registry = CollectorRegistry()
    registry.register(ConveyorCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _metrics_denied(request) -> HttpResponse | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = settings.CONVEYOR_METRICS_TOKEN
        given = header.removeprefix("Bearer ").strip()
        if token and hmac.compare_digest(given.encode(), token.encode()):
            return None
        return _unauthorized("The bearer token is not the one configured for /metrics.")
    if request.user.is_authenticated:
        if request.user.is_active and request.user.is_staff:
            return None
        return HttpResponse(
            "Only staff can read /metrics.\n", status=403, content_type="text/plain"
        )
    return _unauthorized("Sign in as staff or send Authorization: Bearer <token>.")


def _unauthorized(message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="conveyor-metrics"'
    return response


def _secs(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def _from_timestamp(value) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        return None
