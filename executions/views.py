"""The owner's execution pages: the list, the live execution page, cancel and retry.

A flow's page shows its steps as a timeline (:func:`flow_timeline`), refreshed with the rest of
the live part; a step's page links back to its flow.
"""

import json
import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from agents.kinds.base import InvalidInputError
from agents.kinds.flow import step_type, wait_key
from agents.models import Agent

from .errors import CATEGORIES
from .forms import ExecutionFilterForm, RetryForm
from .humanize import time_left
from .models import BulkAction, Execution, FlowStep
from .selectors import agent_median_duration, agents_overview, executions_page, explain_wait
from .services import ExecutionRefused, execution_cancel, execution_retry

LOG_LINES = 500


def _owned_execution(request, uuid) -> Execution:
    return get_object_or_404(
        Execution.objects.select_related("agent", "retry_of", "parent__agent"),
        uuid=uuid,
        owner=request.user,
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
            # Bulk actions on what the filters select, and the owner's latest ones.
            "bulk_actions": BulkAction.objects.filter(owner=request.user)[:3],
            # The filter bulk=<id> (the link on a bulk action's page): say which action.
            **_bulk_filter(form),
        },
    )


def _bulk_filter(form) -> dict:
    from .bulk_views import bulk_words

    bulk = form.cleaned_data.get("bulk") if form.is_bound and form.is_valid() else None
    return {"bulk_filter": bulk_words(bulk), "bulk_filter_uuid": bulk.uuid} if bulk else {}


def live_context(request, execution: Execution) -> dict:
    """Everything the live fragment shows; shared by the page and the polling endpoint."""
    attempts = list(execution.attempts.all())
    total_logs = None
    logs = list(execution.logs.order_by("-id")[:LOG_LINES])[::-1]
    if len(logs) == LOG_LINES:
        total_logs = execution.logs.count()
    estimate = None
    now = timezone.now()
    is_flow = getattr(execution.agent.kind_impl, "is_flow", False)
    deliveries = list(execution.deliveries.select_related("channel").prefetch_related("tries"))
    current = attempts[-1] if attempts else None
    # A flow's progress counts steps, which take anything but equal times: no estimate.
    if execution.status == Execution.Status.RUNNING and current is not None and not is_flow:
        estimate = time_left(
            progress=execution.progress,
            elapsed=(now - current.started_at).total_seconds(),
            median=agent_median_duration(agent_id=execution.agent_id),
        )
    return {
        "execution": execution,
        # Why it waits and until when (executions.selectors.explain_wait), while it waits.
        "wait": explain_wait(execution, at=now),
        "is_flow": is_flow,
        "flow_steps": flow_timeline(execution, now=now) if is_flow else [],
        "attempts": attempts,
        # A cancelled run's attempt closes a moment after the cancel: keep refreshing till then.
        "settling": any(a.finished_at is None for a in attempts),
        "logs": logs,
        "hidden_logs": (total_logs - LOG_LINES) if total_logs else 0,
        "estimate": estimate,
        "heartbeat_timeout": settings.CONVEYOR_HEARTBEAT_TIMEOUT,
        "retried_as": list(execution.retried_as.order_by("created_at")[:5]),
        # The notifications of this run (notifications.Delivery), with their attempts; the
        # page keeps refreshing while one is still to be sent.
        "deliveries": deliveries,
        "deliveries_pending": any(d.status == d.Status.PENDING for d in deliveries),
        "show_traceback": request.user.is_staff,
        "retry_form": RetryForm(initial={"input": _json_text(execution.input)}),
    }


@dataclass
class StepRow:
    """One step of a flow's timeline as its page shows it (a parallel group with its members)."""

    step: FlowStep
    now: datetime
    agent_name: str = ""
    members: list["StepRow"] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.step.index + 1

    @property
    def run(self) -> Execution | None:
        """The step's own execution (run steps, once started)."""
        return self.step.execution

    @property
    def page(self) -> Execution | None:
        """The execution its link opens: its own run, or the earlier run it reuses."""
        return self.step.execution or self.step.reused_from

    @property
    def tone(self) -> str:
        """The marker's colour: the step's status, or its run's while the step runs (queued,
        waiting to retry, or just ended and not yet recorded by the flow's advance)."""
        run = self.run
        if self.step.status == FlowStep.Status.RUNNING and run is not None:
            return run.status
        return self.step.status

    @property
    def label(self) -> str:
        """The badge's words when it is not its run's (a step with no execution of its own)."""
        if self.step.is_reused:
            return "Reused"
        return self.step.get_status_display()

    @property
    def attempts(self) -> str:
        """ "attempt 2 of 4" while it runs, "3 attempts" once it has ended."""
        run = self.run
        if run is None or run.attempt == 0 or run.status == Execution.Status.RETRYING:
            return ""
        if run.status == Execution.Status.RUNNING:
            return f"attempt {run.attempt} of {run.max_attempts}"
        return "1 attempt" if run.attempt == 1 else f"{run.attempt} attempts"

    @property
    def took(self) -> timedelta | None:
        """How long an ended step took (its run's duration, else from start to end)."""
        step, run = self.step, self.run
        if step.is_reused:
            return None
        if run is not None and run.is_terminal:
            return run.duration
        if not step.is_ended:
            return None
        if step.started_at and step.finished_at and step.finished_at > step.started_at:
            return step.finished_at - step.started_at
        return None  # a step that could not start took no time worth showing

    @property
    def running_for(self) -> timedelta | None:
        step, run = self.step, self.run
        if step.status != FlowStep.Status.RUNNING or step.started_at is None:
            return None
        if run is not None and run.is_terminal:
            return None
        return max(self.now - step.started_at, timedelta(0))

    @property
    def error_title(self) -> str:
        """A failed step's error, by its title: its run's, or why it could not start."""
        if self.step.status != FlowStep.Status.FAILED:
            return ""
        if self.run is not None and self.run.error_title:
            return self.run.error_title
        category = CATEGORIES.get(self.step.error_category)
        return category.title if category else ""

    @property
    def error_text(self) -> str:
        if self.run is not None and self.run.error_message:
            return self.run.error_message
        return self.step.note

    @property
    def wait_seconds(self) -> float | None:
        """A wait step's fixed wait (None when it waits until a time)."""
        wait = self.step.spec.get("wait")
        seconds = wait.get("seconds") if isinstance(wait, dict) else None
        return seconds if isinstance(seconds, int | float) else None


def flow_timeline(execution: Execution, *, now: datetime) -> list[StepRow]:
    """The flow's steps in order, each parallel group with its members: the FlowStep rows once
    the flow has started (two queries, however many steps), else its definition as planned."""
    steps = list(
        FlowStep.objects.filter(flow=execution)
        .select_related("execution", "reused_from")
        .order_by("index", "id")
    )
    if not steps and execution.is_active:
        steps = _planned_steps(execution.agent.config or {})
    names = _agent_names(execution, steps)
    top: list[StepRow] = []
    members: dict[str, list[StepRow]] = {}
    for step in steps:
        row = StepRow(step=step, now=now, agent_name=names.get(str(step.spec.get("agent")), ""))
        if step.group:
            members.setdefault(step.group, []).append(row)
        else:
            top.append(row)
    for row in top:
        row.members = members.get(row.step.key, [])
    return top


def _planned_steps(config: dict) -> list[FlowStep]:
    """A flow that has not started yet: its steps as defined now, none of them started."""
    planned: list[FlowStep] = []
    for index, spec in enumerate(s for s in config.get("steps") or [] if isinstance(s, dict)):
        key = spec.get("key") or wait_key(index)
        planned.append(FlowStep(key=key, index=index, type=step_type(spec), spec=spec))
        for member in spec.get("parallel") or []:
            if isinstance(member, dict):
                planned.append(
                    FlowStep(
                        key=member.get("key", ""),
                        index=index,
                        group=key,
                        type=FlowStep.Type.RUN,
                        spec=member,
                    )
                )
    return planned


def _agent_names(execution: Execution, steps: list[FlowStep]) -> dict[str, str]:
    """The names of the agents the run steps run, by UUID (one query)."""
    wanted = set()
    for step in steps:
        try:
            wanted.add(uuid_lib.UUID(str(step.spec.get("agent"))))
        except ValueError:
            continue
    if not wanted:
        return {}
    found = Agent.objects.filter(owner_id=execution.owner_id, uuid__in=wanted)
    return {str(u): name for u, name in found.values_list("uuid", "name")}


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
