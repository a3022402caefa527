"""The bulk actions' pages: the preview ("This will retry 183 executions") with its confirm
button, and the action's page with its progress, refreshed while it goes on.

The preview reads the executions list's filter form, so it counts what the list shows; the
confirm form carries the filter as the preview resolved it (a time range such as "last hour"
becomes the times it meant then). A parameter the filters do not know, a second value of one that
takes one, a filter that is not valid and an unknown action are refused, each named: a typo never
widens an action to every execution.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_http_methods

from agents.models import Agent

from .bulk import (
    BULK_MAX,
    BulkRefused,
    bulk_action_create,
    bulk_preview,
    checked_action,
    reason_words,
)
from .errors import CATEGORIES
from .filters import InvalidFilter
from .forms import ExecutionFilterForm
from .models import BulkAction, Execution
from .selectors import WAIT_REASONS
from .templatetags.conveyor import when

VERBS = {BulkAction.Action.RETRY: "Retry", BulkAction.Action.CANCEL: "Cancel"}


def filter_words(filter: dict, *, owner) -> list[tuple[str, str]]:
    """The stored filter as (label, words) lines: ("Status", "Failed"), ("Agent", "sync")."""
    labels = {
        "status": dict(Execution.Status.choices),
        "trigger": dict(Execution.Trigger.choices),
        "wait_reason": dict(WAIT_REASONS),
        "error_category": {key: info.title for key, info in CATEGORIES.items()},
    }
    lines = []
    for name, title in (
        ("status", "Status"),
        ("trigger", "Trigger"),
        ("wait_reason", "Waiting for"),
        ("error_category", "Error"),
    ):
        if filter.get(name):
            lines.append((title, ", ".join(labels[name].get(v, v) for v in filter[name])))
    if filter.get("agent"):
        agent = Agent.objects.filter(owner=owner, uuid=filter["agent"]).first()
        lines.append(("Agent", agent.name if agent else "an agent that is not yours"))
    if filter.get("q"):
        lines.append(("Search", f"“{filter['q']}”"))
    after, before = _moment(filter.get("created_after")), _moment(filter.get("created_before"))
    if after and before:
        lines.append(("Created", f"from {when(after)} to before {when(before)}"))
    elif after:
        lines.append(("Created", f"at or after {when(after)}"))
    elif before:
        lines.append(("Created", f"before {when(before)}"))
    if filter.get("slower_than") is not None:
        lines.append(("Took at least", f"{filter['slower_than']:g} s"))
    if filter.get("faster_than") is not None:
        lines.append(("Took less than", f"{filter['faster_than']:g} s"))
    if filter.get("parent"):
        lines.append(("Flow", "not a flow's steps" if filter["parent"] == "none" else "its steps"))
    if filter.get("bulk"):
        lines.append(("Bulk action", _bulk_words(filter["bulk"], owner=owner)))
    return lines or [("Filter", "none: all your executions")]


def _bulk_words(uuid: str, *, owner) -> str:
    bulk = BulkAction.objects.filter(owner=owner, uuid=uuid).first()
    return bulk_words(bulk) if bulk else "one that is not yours"


def bulk_words(bulk: BulkAction) -> str:
    """ "The retries made by the bulk retry of 3 Dec 2026, 14:02" """
    if bulk.action == BulkAction.Action.CANCEL:
        return f"The executions cancelled by the bulk cancel of {when(bulk.created_at)}"
    return f"The retries made by the bulk retry of {when(bulk.created_at)}"


def _moment(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


@login_required
@require_http_methods(["GET", "POST"])
def bulk_new(request):
    """GET: the preview of ``?action=retry|cancel`` on the list's filters. POST: confirmed."""
    if request.method == "POST":
        return _confirm(request)
    action = request.GET.get("action", "")
    params = request.GET.copy()
    params.pop("action", None)
    params.pop("after", None)
    if not request.GET:
        # Nothing asked: the list is where "Retry all…" and "Cancel all…" are chosen.
        return redirect(reverse("executions:list"))
    context = {
        "action": action,
        "verb": VERBS.get(action, "Act on"),
        "list_query": params.urlencode(),
    }
    if action not in BulkAction.Action.values or len(request.GET.getlist("action")) > 1:
        try:
            _check_action(request.GET.getlist("action"))
        except BulkRefused as exc:
            context["error"] = exc.message
            return render(request, "executions/bulk_preview.html", context, status=400)
    form = ExecutionFilterForm(params or None, owner=request.user)
    context["form"] = form
    query = form.query()
    if query is None:
        context["error"] = "Some filters are not valid, nothing was done:"
        context["problems"] = form.problems()
        return render(request, "executions/bulk_preview.html", context, status=422)
    try:
        preview = bulk_preview(owner=request.user, action=action, filter=query)
    except InvalidFilter as exc:
        context["error"] = exc.message
        return render(request, "executions/bulk_preview.html", context, status=422)
    context.update(
        preview=preview,
        filter_json=json.dumps(preview.filter),
        filter_lines=filter_words(preview.filter, owner=request.user),
        bulk_max=BULK_MAX,
    )
    return render(request, "executions/bulk_preview.html", context)


def _check_action(given: list[str]) -> None:
    """The action of the bulk page's URL: one of retry or cancel (``BulkRefused`` naming it)."""
    if len(given) > 1:
        raise BulkRefused("action: Give one value, not several.", code="unknown_action")
    checked_action(given[0] if given else "")


def _confirm(request):
    action = request.POST.get("action", "")
    try:
        filter = json.loads(request.POST.get("filter") or "{}")
        previewed = int(request.POST.get("previewed", ""))
    except ValueError:
        filter, previewed = None, None
    context = {"action": action, "verb": VERBS.get(action, "Retry"), "list_query": ""}
    if filter is None or action not in BulkAction.Action.values:
        context["error"] = "This form could not be read: go back to the list and try again."
        return render(request, "executions/bulk_preview.html", context, status=400)
    try:
        bulk = bulk_action_create(
            owner=request.user,
            action=action,
            filter=filter,
            via=BulkAction.Via.PAGE,
            previewed=previewed,
        )
    except (InvalidFilter, BulkRefused) as exc:
        context["error"] = exc.message
        status = 409 if getattr(exc, "code", "") == "nothing_to_do" else 422
        return render(request, "executions/bulk_preview.html", context, status=status)
    return redirect("executions:bulk", uuid=bulk.uuid)


def _owned_action(request, uuid) -> BulkAction:
    return get_object_or_404(
        BulkAction.objects.select_related("owner"), uuid=uuid, owner=request.user
    )


def bulk_context(request, bulk: BulkAction) -> dict:
    return {
        "bulk": bulk,
        "verb": VERBS[bulk.action],
        "filter_lines": filter_words(bulk.filter, owner=request.user),
        "reasons": reason_words(bulk.reasons),
    }


@login_required
def bulk_detail(request, uuid):
    bulk = _owned_action(request, uuid)
    return render(request, "executions/bulk_detail.html", bulk_context(request, bulk))


@login_required
def bulk_live(request, uuid):
    """The polled part. Once the action is over it renders without the trigger: polling stops."""
    bulk = _owned_action(request, uuid)
    return render(request, "executions/_bulk_live.html", bulk_context(request, bulk))
