"""The owner's agent pages: list, detail with Run now, create and edit, pause and resume,
delete."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models.functions import Lower
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from executions.selectors import agents_overview, limit_uses
from executions.services import ExecutionRefused, execution_request
from ops.baseline import against_usual
from ops.selectors import agent_stats

from . import services
from .forms import AgentForm, RunForm, SecretsForm, flow_step_problems
from .kinds import KINDS, get_kind
from .kinds.base import InvalidInputError
from .models import Agent
from .schedule_selectors import schedule_panel
from .webhook_views import panel_context


def _owned_agent(request, uuid) -> Agent:
    return get_object_or_404(Agent, uuid=uuid, owner=request.user)


@login_required
def agent_list(request):
    return render(request, "agents/list.html", {"agents": agents_overview(owner=request.user)})


@login_required
def agent_detail(request, uuid):
    agent = _owned_agent(request, uuid)
    return render(
        request,
        "agents/detail.html",
        {
            **_detail_context(request, agent),
            "run_form": _run_form(agent),
        },
    )


def _run_form(agent: Agent) -> RunForm:
    """Run now, pre-filled with the input the agent's kind says it expects (if it says)."""
    kind = get_kind(agent.kind)
    example = kind.input_example(agent.config) if kind is not None else None
    if example is None:
        return RunForm()
    form = RunForm(initial={"input": json.dumps(example, indent=2, ensure_ascii=False)})
    form.fields["input"].help_text = (
        "Pre-filled with an example of what this agent expects: change the values, or empty "
        "the box to run without input."
    )
    return form


def _detail_context(request, agent: Agent) -> dict:
    """Everything the agent page shows; consumes a pending one-time reveal of the webhook
    secret, so build it once per render."""
    kind = get_kind(agent.kind)
    return {
        "agent": agent,
        "kind": kind,
        "summary": kind.summary(agent.config, secrets=agent.secrets)
        if kind
        else [("Kind", agent.kind)],
        "secret_names": sorted(agent.secrets),
        "stats": agent_stats(agent=agent),
        # Its last day against its own 14 days before (ops.baseline).
        "usual": against_usual(agents=[agent], now=timezone.now())[agent.pk],
        # Its limits (its own, its queue's, its destination's) and how much of each is used.
        "limits": limit_uses(agent=agent),
        "recent": agent.executions.order_by("-created_at", "-id")[:15],
        "schedule_panel": schedule_panel(agent=agent, at=timezone.now()),
        "webhook_panel": panel_context(request, agent),
        "notify_summary": notify_summary(agent),
    }


# The agent page's one line on notifications ("Tells you when a run fails, by Email (ops)").
NOTIFY_WHEN = {
    Agent.NotifyOn.FAILURE: "when a run fails",
    Agent.NotifyOn.SUCCESS: "when a run succeeds",
    Agent.NotifyOn.ALWAYS: "when a run ends",
}
CHANNEL_WORD = {"email": "Email", "webhook": "Webhook", "slack": "Slack"}


def notify_summary(agent: Agent) -> str:
    """What the agent tells its owner and where, in one sentence."""
    when = [NOTIFY_WHEN[agent.notify_on]] if agent.notify_on in NOTIFY_WHEN else []
    if agent.notify_retries and not getattr(agent.kind_impl, "is_flow", False):
        when.append("on each retry")
    if agent.notify_recovery and agent.notify_on not in (
        Agent.NotifyOn.SUCCESS,
        Agent.NotifyOn.ALWAYS,
    ):
        when.append("when it recovers")
    if not when:
        return "Tells you nothing."
    channels = [
        f"{CHANNEL_WORD.get(c.kind, c.kind)} ({c.name}){'' if c.is_enabled else ', turned off'}"
        for c in agent.notify_channels.all()
    ]
    if not channels:
        return "Tells you nothing: no channel is chosen."
    said = when[0] if len(when) == 1 else ", ".join(when[:-1]) + " and " + when[-1]
    if getattr(agent.kind_impl, "is_flow", False) and agent.notify_steps:
        said += ", and about each step"
    return f"Tells you {said}, by {', '.join(channels)}."


@login_required
@require_POST
def agent_run(request, uuid):
    """Queue a run from the Run now form; problems come back inline, nothing is queued."""
    agent = _owned_agent(request, uuid)
    form = RunForm(request.POST)
    if form.is_valid():
        value = form.cleaned_data["input"]
        try:
            execution = execution_request(
                agent=agent,
                trigger="manual",
                input=value,
                not_before=form.cleaned_data["not_before"],
            )
        except InvalidInputError as exc:
            form.add_error("input", exc.message)
        except ExecutionRefused as exc:
            form.add_error(None, exc.message)
        else:
            url = reverse("executions:detail", args=[execution.uuid])
            if request.htmx:
                return HttpResponseClientRedirect(url)
            return redirect(url)
    if request.htmx:
        return render(request, "agents/_run_form.html", {"agent": agent, "run_form": form})
    return render(
        request,
        "agents/detail.html",
        {**_detail_context(request, agent), "run_form": form},
        status=422,
    )


@login_required
def agent_choose_kind(request):
    return render(request, "agents/choose_kind.html", {"kinds": KINDS.values()})


@login_required
def agent_create(request, kind):
    kind_impl = get_kind(kind)
    if kind_impl is None:
        raise Http404("No such kind")
    return _agent_form(request, kind_impl, agent=None)


@login_required
def agent_edit(request, uuid):
    agent = _owned_agent(request, uuid)
    return _agent_form(request, get_kind(agent.kind), agent=agent)


def _agent_form(request, kind, agent):
    """Create or edit: the agent's own fields, the kind's config form and the secrets (a flow
    has none of its own; its steps are edited in the page's step editor, see flow_editor.js)."""
    is_flow = getattr(kind, "is_flow", False)
    data = request.POST if request.method == "POST" else None
    form = AgentForm(data, instance=agent, prefix="agent", kind=kind, owner=request.user)
    initial = agent.config if agent else None
    if is_flow and agent is None:
        initial = NEW_FLOW
    config_form = kind.config_form(data, prefix="config", initial=initial)
    if is_flow:
        # Without script this box is the whole editor, so its help shows the format (the
        # editor, when it runs, says that its rows write the box).
        config_form.fields["steps"].help_text = FLOW_STEPS_HELP
    secrets_form = None
    if not is_flow:
        existing = sorted(agent.secrets) if agent else []
        secrets_form = SecretsForm(data, prefix="secrets", existing=existing)
    step_errors: dict[str, list[str]] = {}
    if request.method == "POST" and all(
        [form.is_valid(), config_form.is_valid(), secrets_form is None or secrets_form.is_valid()]
    ):
        changes = secrets_form.changes() if secrets_form is not None else {}
        try:
            if agent is None:
                agent = services.agent_create(
                    owner=request.user,
                    kind=kind.name,
                    config=config_form.cleaned_data,
                    secrets={k: v for k, v in changes.items() if v is not None},
                    notify_channels=form.cleaned_data["notify_channels"],
                    **form.agent_fields(),
                )
                messages.success(request, f"Agent “{agent.name}” created. Run it below.")
            else:
                services.agent_update(
                    agent=agent,
                    config=config_form.cleaned_data,
                    secrets=changes,
                    notify_channels=form.cleaned_data["notify_channels"],
                    **form.agent_fields(),
                )
                messages.success(request, "Changes saved.")
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                name = field.removeprefix("config.")
                if field.startswith("config.") and name in config_form.fields:
                    config_form.add_error(name, errors)
                elif field.startswith("config.") and is_flow:
                    # A step's problem ("steps.1.input"): shown at its step, not a form field.
                    step_errors[name] = errors
                elif field in form.fields:
                    form.add_error(field, errors)
                else:
                    form.add_error(None, errors)
        else:
            return redirect("agents:detail", uuid=agent.uuid)
    context = {
        "agent": agent,
        "kind": kind,
        "form": form,
        "config_form": config_form,
        "secrets_form": secrets_form,
    }
    if is_flow:
        context.update(_flow_editor_context(request, agent, config_form, step_errors))
    return render(
        request,
        "agents/form.html",
        context,
        status=422 if request.method == "POST" else 200,
    )


# A new flow starts with one run step to fill in.
NEW_FLOW = {"steps": [{"key": "step-1", "agent": ""}], "result": "last"}
FLOW_STEPS_HELP = (
    'A JSON list of steps, for example [{"key": "fetch", "agent": "<agent name>", "input": '
    '{"url": "{{ input.url }}"}}, {"key": "cool-off", "wait": {"seconds": 60}}].'
)


def _flow_editor_context(request, agent, config_form, step_errors) -> dict:
    """What the step editor needs: the agents a step may run (the owner's others, by name) and
    the problems found in the steps, by where they are (``steps.1.input``)."""
    others = Agent.objects.filter(owner=request.user).order_by(Lower("name"), "pk")
    if agent is not None:
        others = others.exclude(pk=agent.pk)
    steps = config_form.cleaned_data.get("steps") if config_form.is_bound else None
    return {
        "step_agents": [
            {"uuid": str(uuid), "name": name, "kind": kind}
            for uuid, name, kind in others.values_list("uuid", "name", "kind")
        ],
        "step_errors": step_errors,
        "step_problems": flow_step_problems(step_errors, steps),
    }


@login_required
@require_POST
def agent_pause(request, uuid):
    agent = _owned_agent(request, uuid)
    services.agent_pause(agent=agent)
    messages.info(request, f"“{agent.name}” is paused: new runs are refused until you resume it.")
    return redirect("agents:detail", uuid=agent.uuid)


@login_required
@require_POST
def agent_resume(request, uuid):
    agent = _owned_agent(request, uuid)
    services.agent_resume(agent=agent)
    messages.success(request, f"“{agent.name}” is running again.")
    return redirect("agents:detail", uuid=agent.uuid)


@login_required
def agent_delete(request, uuid):
    """Delete an agent: GET says what goes with it and asks; POST deletes, unless
    ``agents.services.agent_delete`` refuses (runs in progress), which the page then says."""
    agent = _owned_agent(request, uuid)
    refused = None
    if request.method == "POST":
        try:
            services.agent_delete(agent=agent)
        except services.AgentBusy as exc:
            refused = exc.message
        else:
            messages.success(request, f"Agent “{agent.name}” deleted, with its runs and schedules.")
            return redirect("agents:list")
    return render(
        request,
        "agents/delete.html",
        {"agent": agent, "going": services.agent_delete_preview(agent=agent), "refused": refused},
        status=409 if refused else 200,
    )
