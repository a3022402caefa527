"""The owner's execution pages: the list, the live execution page, cancel and retry."""

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents.kinds.base import InvalidInputError

from .forms import ExecutionFilterForm, RetryForm
from .humanize import time_left
from .models import Execution
from .selectors import agent_median_duration, agents_overview, executions_page
from .services import ExecutionRefused, execution_cancel, execution_retry

LOG_LINES = 500


def _owned_execution(request, uuid) -> Execution:
    return get_object_or_404(
        Execution.objects.select_related("agent", "retry_of"), uuid=uuid, owner=request.user
    )


@login_required
def home(request):
    recent = (
        Execution.objects.filter(owner=request.user)
        .select_related("agent")
        .order_by("-created_at", "-id")[:10]
    )
    return render(
        request,
        "home.html",
        {
            "agents": agents_overview(owner=request.user),
            "recent": recent,
        },
    )


@login_required
def execution_list(request):
    form = ExecutionFilterForm(request.GET or None, owner=request.user)
    queryset = form.filter(Execution.objects.filter(owner=request.user).select_related("agent"))
    rows, next_cursor = executions_page(queryset=queryset, cursor=request.GET.get("after"))
    params = request.GET.copy()
    params.pop("after", None)
    return render(
        request,
        "executions/list.html",
        {
            "form": form,
            "rows": rows,
            "next_cursor": next_cursor,
            "is_first_page": not request.GET.get("after"),
            "filter_query": params.urlencode(),
        },
    )


def live_context(request, execution: Execution) -> dict:
    """Everything the live fragment shows; shared by the page and the polling endpoint."""
    attempts = list(execution.attempts.all())
    total_logs = None
    logs = list(execution.logs.order_by("-id")[:LOG_LINES])[::-1]
    if len(logs) == LOG_LINES:
        total_logs = execution.logs.count()
    estimate = None
    current = attempts[-1] if attempts else None
    if execution.status == Execution.Status.RUNNING and current is not None:
        estimate = time_left(
            progress=execution.progress,
            elapsed=(timezone.now() - current.started_at).total_seconds(),
            median=agent_median_duration(agent_id=execution.agent_id),
        )
    return {
        "execution": execution,
        "attempts": attempts,
        # A cancelled run's attempt closes a moment after the cancel: keep refreshing till then.
        "settling": any(a.finished_at is None for a in attempts),
        "logs": logs,
        "hidden_logs": (total_logs - LOG_LINES) if total_logs else 0,
        "estimate": estimate,
        "heartbeat_timeout": settings.CONVEYOR_HEARTBEAT_TIMEOUT,
        "retried_as": list(execution.retried_as.order_by("created_at")[:5]),
        "show_traceback": request.user.is_staff,
        "retry_form": RetryForm(initial={"input": _json_text(execution.input)}),
    }


def _json_text(value):
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


@login_required
def execution_detail(request, uuid):
    execution = _owned_execution(request, uuid)
    return render(request, "executions/detail.html", live_context(request, execution))


@login_required
def execution_live(request, uuid):
    """The polled fragment. Once final, it renders without the polling trigger: polling stops."""
    execution = _owned_execution(request, uuid)
    return render(request, "executions/_live.html", live_context(request, execution))


@login_required
@require_POST
def execution_cancel_view(request, uuid):
    execution = _owned_execution(request, uuid)
    try:
        execution_cancel(execution=execution, by=request.user.get_username())
    except ExecutionRefused as exc:
        messages.info(request, exc.message)
    execution.refresh_from_db()
    if request.htmx:
        return render(request, "executions/_live.html", live_context(request, execution))
    return redirect("executions:detail", uuid=execution.uuid)


@login_required
@require_POST
def execution_retry_view(request, uuid):
    execution = _owned_execution(request, uuid)
    form = RetryForm(request.POST)
    if form.is_valid():
        try:
            if form.cleaned_data["edit"]:
                new = execution_retry(
                    execution=execution,
                    input=form.cleaned_data["input"],
                    by=request.user.get_username(),
                )
            else:
                new = execution_retry(execution=execution, by=request.user.get_username())
        except InvalidInputError as exc:
            form.add_error("input", exc.message)
        except ExecutionRefused as exc:
            form.add_error(None, exc.message)
        else:
            url = reverse("executions:detail", args=[new.uuid])
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    context = {**live_context(request, execution), "retry_form": form, "retry_open": True}
    return render(
        request,
        "executions/_live.html" if request.htmx else "executions/detail.html",
        context,
        status=422,
    )
