"""The support bundle: one JSON file with everything Conveyor recorded about one run, for its
owner to send to whoever helps them (or to read themselves in any text editor).

:func:`support_bundle` builds it and every surface hands out what it builds: the execution
page's "Download support bundle" link (``executions.bundle_views``) and
``GET /api/v1/executions/<id>/bundle``. Both give a run to its owner only (anyone else gets the
404 an unknown run gets), and the traceback only to staff, as the execution page and the API's
``error_detail`` do.

What it holds: an ``about`` block (what the file is, Conveyor's version, when and by whom it was
made), the run (ids, agent, kind, trigger, status, timings), the agent's configuration as it is
now with its version, the input, the result, the error (title, message, category; the traceback
for staff), every attempt with its worker host, outcome and retry delay, every event, every log
line, a flow's steps and the names and sizes of the files the run kept (not their contents).

No secret leaves in it: every string (names too) goes through one
:class:`agents.secrets.Scrubber` that knows the agent's secret values and webhook secrets and
also removes what looks like a secret (values of fields such as ``Authorization`` or
``api_key``, "Bearer ...", ``token=...`` in URLs, ...), each replaced with ``[secret removed]``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.http import HttpResponse
from django.utils import timezone

from agents.secrets import Scrubber
from common.version import conveyor_version

from .errors import CATEGORIES
from .models import Execution, FlowStep

# Bumped when the layout changes in a way a reader of older files must know about.
BUNDLE_FORMAT = 1
SECRET_REMOVED = "[secret removed]"  # noqa: S105 (what stands in for a secret)


def support_bundle(
    execution: Execution, *, staff: bool, by: str = "", at: datetime | None = None
) -> dict[str, Any]:
    """Everything recorded about ``execution``, with secrets removed (see the module docstring).
    ``staff``: whether the traceback is included; ``by``: who asked for it."""
    at = at or timezone.now()
    agent = execution.agent
    attempts = list(execution.attempts.all())
    bundle = {
        "about": {
            "what": (
                "A Conveyor support bundle: everything Conveyor recorded about one run of an "
                "agent. Secret values, and values that look like secrets, are replaced with "
                f"“{SECRET_REMOVED}”."
            ),
            "format": BUNDLE_FORMAT,
            "conveyor_version": conveyor_version(),
            "generated_at": _time(at),
            "generated_by": by,
            "includes_traceback": staff,
        },
        "run": _run(execution, attempts),
        "agent": _agent(execution),
        "input": execution.input,
        "result": execution.result,
        "error": _error(execution, staff=staff),
        "attempts": [_attempt(a) for a in attempts],
        "worker_hosts": sorted({a.worker for a in attempts if a.worker}),
        "events": [
            {
                "at": _time(e.at),
                "attempt": e.attempt,
                "from": e.from_status,
                "to": e.to_status,
                "reason": e.reason,
                "data": e.data,
            }
            for e in execution.events.all()
        ],
        "logs": [
            {
                "at": _time(line.at),
                "attempt": line.attempt,
                "level": line.level,
                "message": line.message,
                "data": line.data,
            }
            for line in execution.logs.all().iterator(chunk_size=2000)
        ],
        "flow_steps": _flow_steps(execution),
        "files": [
            {
                "id": str(f.uuid),
                "name": f.name,
                "content_type": f.content_type,
                "bytes": f.size,
                "attempt": f.attempt,
                "saved_at": _time(f.created_at),
            }
            for f in execution.artifacts.all()
        ],
    }
    secrets = [*agent.secrets.values(), *agent.webhook_secrets.values()]
    return Scrubber(secrets, replacement=SECRET_REMOVED, lookalikes=True).json(bundle)


def support_bundle_text(bundle: dict[str, Any]) -> str:
    """The bundle as the file holds it: indented JSON, UTF-8, readable in any text editor."""
    return json.dumps(bundle, indent=2, ensure_ascii=False, default=str) + "\n"


def support_bundle_filename(execution: Execution) -> str:
    return f"conveyor-run-{execution.uuid}.json"


def support_bundle_response(execution: Execution, *, user) -> HttpResponse:
    """The bundle of ``execution`` as a download for ``user``, whom the caller has checked may
    have it (its owner): the traceback in it if they are staff. The page and the API hand out
    this response."""
    bundle = support_bundle(execution, staff=user.is_staff, by=user.get_username())
    response = HttpResponse(
        support_bundle_text(bundle).encode(), content_type="application/json; charset=utf-8"
    )
    filename = support_bundle_filename(execution)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # Made for whoever asked, with what they may see: never kept by a shared cache.
    response["Cache-Control"] = "private, no-store"
    return response


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def _run(execution: Execution, attempts: list) -> dict[str, Any]:
    agent = execution.agent
    first_start = attempts[0].started_at if attempts else execution.started_at
    return {
        "id": str(execution.uuid),
        "agent": {"id": str(agent.uuid), "name": agent.name, "owner": agent.owner.get_username()},
        "kind": agent.kind,
        "trigger": execution.trigger,
        "status": execution.status,
        "status_label": execution.status_label,
        "attempt": execution.attempt,
        "max_attempts": execution.max_attempts,
        "progress": execution.progress,
        "progress_message": execution.progress_message,
        "wait_reason": execution.wait_reason,
        "wait_until": _time(execution.wait_until),
        "retry_of": str(execution.retry_of.uuid) if execution.retry_of_id else None,
        "flow": str(execution.parent.uuid) if execution.parent_id else None,
        "step_key": execution.step_key or None,
        "retry_override": execution.retry_override,
        "idempotency_key": execution.idempotency_key,
        "schedule_slot": _time(execution.scheduled_for),
        "timings": {
            "created_at": _time(execution.created_at),
            "not_before": _time(execution.not_before),
            # From its creation to its first attempt's start: time spent waiting to run.
            "queued_seconds": _seconds(first_start - execution.created_at) if first_start else None,
            "started_at": _time(execution.started_at),
            "finished_at": _time(execution.finished_at),
            "duration_seconds": _seconds(execution.duration),
            "total_seconds": _seconds(execution.finished_at - execution.created_at)
            if execution.finished_at
            else None,
        },
    }


def _created_with(execution: Execution, agent) -> str:
    if execution.agent_version is None:
        return "Which version this run was created with was not recorded (an older run)."
    if execution.agent_version == agent.version:
        return "This run was created with the same version."
    return (
        f"This run was created with version {execution.agent_version}: "
        "`configuration_at_creation` holds the settings of that version."
    )


def _agent(execution: Execution) -> dict[str, Any]:
    agent = execution.agent
    return {
        "note": (
            f"The agent's configuration as it is now (version {agent.version}). "
            + _created_with(execution, agent)
        ),
        "version": agent.version,
        "run_created_with_version": execution.agent_version,
        "updated_at": _time(agent.updated_at),
        "kind": agent.kind,
        "config": agent.config,
        # Names only: the values are never in the bundle.
        "secret_names": sorted(agent.secrets),
        "paused": agent.is_paused,
        "retry_policy": {
            "max_retries": agent.max_retries,
            "backoff_seconds": agent.retry_backoff,
            "backoff_max_seconds": agent.retry_backoff_max,
            "jitter": agent.retry_jitter,
            "retry_on": agent.retry_on,
        },
        "timeout_seconds": agent.timeout,
        "queue": agent.queue,
        "priority": agent.priority,
        "max_concurrency": agent.max_concurrency,
        "log_level": agent.log_level,
        "configuration_at_creation": _snapshot(execution, agent),
    }


def _snapshot(execution: Execution, agent) -> dict[str, Any] | None:
    """The settings of the version the run was created with (secrets by name only), when it
    differs from the current one."""
    if execution.agent_version is None or execution.agent_version == agent.version:
        return None
    recorded = agent.version_at(execution.agent_version)
    return {"version": recorded.version, **recorded.snapshot} if recorded else None


def _error(execution: Execution, *, staff: bool) -> dict[str, Any] | None:
    if not execution.error_category and not execution.error_title:
        return None
    info = CATEGORIES.get(execution.error_category)
    error = {
        "category": execution.error_category,
        "title": execution.error_title,
        "message": execution.error_message,
        "what_to_do": info.what_to_do if info else "",
    }
    if staff:
        error["traceback"] = execution.error_detail
    elif execution.error_detail:
        error["traceback"] = "Not included: the traceback is available to operators."
    return error


def _attempt(attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "worker_host": attempt.worker,
        "started_at": _time(attempt.started_at),
        "finished_at": _time(attempt.finished_at),
        "duration_seconds": _seconds(attempt.duration),
        "outcome": attempt.outcome or "running",
        "error_category": attempt.error_category,
        "error_message": attempt.error_message,
        "retry_delay_seconds": attempt.retry_delay,
    }


def _flow_steps(execution: Execution) -> list[dict[str, Any]]:
    steps = FlowStep.objects.filter(flow=execution).select_related("execution", "reused_from")
    return [
        {
            "key": step.key,
            "index": step.index,
            "group": step.group or None,
            "type": step.type,
            "status": step.status,
            "execution": str(step.execution.uuid) if step.execution else None,
            "execution_status": step.execution.status if step.execution else None,
            "reused_from": str(step.reused_from.uuid) if step.reused_from else None,
            "note": step.note,
            "error_category": step.error_category,
            "started_at": _time(step.started_at),
            "finished_at": _time(step.finished_at),
        }
        for step in steps.order_by("index", "id")
    ]
