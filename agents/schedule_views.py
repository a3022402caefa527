"""The owner's schedule pages: add and edit a schedule, pause, resume and delete it.

The agent page's view shows the schedules with ``agents.schedule_selectors.schedule_panel``.
Validation lives in ``agents.schedule_services``; the form only parses what a person typed
(JSON, a local date and time).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from . import schedule_services as services
from .forms import JSONInputField
from .models import Agent, Schedule
from .schedules import available_zones, next_runs

PREVIEW_RUNS = 5


class ScheduleForm(forms.Form):
    kind = forms.ChoiceField(
        choices=Schedule.Kind.choices,
        widget=forms.RadioSelect,
        initial=Schedule.Kind.CRON,
        label="Runs",
    )
    cron = forms.CharField(
        required=False,
        label="Cron expression",
        widget=forms.TextInput(attrs={"placeholder": "0 9 * * 1-5", "spellcheck": "false"}),
        help_text="Five fields: minute, hour, day of month, month, day of week. Ranges (1-5), "
        "steps (*/15), lists (0,30) and names (mon, jan) work.",
    )
    timezone = forms.CharField(
        required=False,
        label="Time zone",
        widget=forms.TextInput(attrs={"list": "time-zones", "spellcheck": "false"}),
        help_text="The cron times are read on this zone's clock, daylight saving included.",
    )
    interval_seconds = forms.IntegerField(
        required=False,
        min_value=1,
        label="Every (seconds)",
        help_text="For example 300 for every 5 minutes. The first run is one interval from now.",
    )
    run_at = forms.DateTimeField(
        required=False,
        label="Date and time",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    input = JSONInputField(label="Input (JSON)", help_text="Given to every scheduled run.")
    catch_up = forms.ChoiceField(
        choices=Schedule.CatchUp.choices,
        initial=Schedule.CatchUp.LATEST,
        label="After an outage",
        help_text="What happens to runs missed while Conveyor was down. Never more than one.",
    )

    def __init__(self, *args, zone_name: str = "UTC", **kwargs):
        super().__init__(*args, **kwargs)
        self.zone_name = zone_name
        self.fields["run_at"].help_text = f"In your time zone ({zone_name})."

    def clean_timezone(self):
        return self.cleaned_data["timezone"].strip() or "UTC"


def _owned_agent(request, uuid) -> Agent:
    return get_object_or_404(Agent, uuid=uuid, owner=request.user)


def _owned_schedule(request, uuid, schedule_uuid) -> Schedule:
    return get_object_or_404(
        Schedule.objects.select_related("agent"),
        uuid=schedule_uuid,
        agent__uuid=uuid,
        agent__owner=request.user,
    )


def _back(agent: Agent):
    return redirect(reverse("agents:detail", args=[agent.uuid]) + "#schedules")


@login_required
def schedule_new(request, uuid):
    agent = _owned_agent(request, uuid)
    return _schedule_form(request, agent, schedule=None)


@login_required
def schedule_edit(request, uuid, schedule_uuid):
    schedule = _owned_schedule(request, uuid, schedule_uuid)
    return _schedule_form(request, schedule.agent, schedule=schedule)


def _schedule_form(request, agent: Agent, schedule: Schedule | None):
    zone_name = getattr(request, "timezone_name", None) or timezone.get_current_timezone_name()
    if schedule is None:
        initial = {"kind": Schedule.Kind.CRON, "timezone": zone_name}
    else:
        initial = {name: getattr(schedule, name) for name in services.SCHEDULE_FIELDS}
        initial["input"] = services.input_text(schedule.input)
    data = request.POST if request.method == "POST" else None
    form = ScheduleForm(data, initial=initial, zone_name=zone_name)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in services.SCHEDULE_FIELDS}
        try:
            if schedule is None:
                schedule = services.schedule_create(agent=agent, **fields)
                messages.success(request, f"Schedule added: {services.describe(schedule)}.")
            else:
                services.schedule_update(schedule=schedule, **fields)
                messages.success(request, f"Schedule saved: {services.describe(schedule)}.")
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                form.add_error(name if name in form.fields else None, errors)
        else:
            for notice in services.schedule_dst_notices(schedule, at=timezone.now())[:2]:
                messages.warning(request, f"Daylight saving: {notice.message}")
            return _back(agent)
    return render(
        request,
        "agents/schedule_form.html",
        {
            "agent": agent,
            "schedule": schedule,
            "form": form,
            "zones": sorted(available_zones()),
        },
        status=422 if request.method == "POST" else 200,
    )


@login_required
@require_GET
def schedule_preview(request, uuid):
    """The schedule form's next runs, while the person types (a fragment for htmx).

    Reads the timing fields only; nothing is saved. Times are shown in the viewer's zone and,
    for a cron schedule in another zone, in the schedule's own.
    """
    agent = _owned_agent(request, uuid)
    zone_name = getattr(request, "timezone_name", None) or timezone.get_current_timezone_name()
    form = ScheduleForm(request.GET, zone_name=zone_name)
    form.is_valid()  # only the timing fields are read; the others may be left out
    fields = {name: form.cleaned_data.get(name) for name in services.TIMING_FIELDS}
    draft = Schedule(agent=agent, **{k: v for k, v in fields.items() if v not in (None, "")})
    now = timezone.now()
    runs, words, problem, notices = [], "", "", []
    # The field that says when, for the chosen kind.
    timing_field = {"cron": "cron", "interval": "interval_seconds", "once": "run_at"}.get(
        draft.kind
    )
    if timing_field and form.errors.get(timing_field):
        problem = " ".join(form.errors[timing_field])
    elif not timing_field or not fields.get(timing_field):
        problem = "Fill in when it runs to see the next runs."
    else:
        try:
            timing = services.schedule_timing(draft, anchor=now)
            runs = next_runs(timing, after=now, count=PREVIEW_RUNS)
            words = services.describe(draft)
            notices = services.schedule_dst_notices(draft, at=now)[:1]
        except ValueError as exc:
            problem = str(exc)
    return render(
        request,
        "agents/_schedule_preview.html",
        {
            "runs": runs,
            "words": words,
            "problem": problem,
            "notice": notices[0] if notices else None,
            "zone": zone_name,
            "schedule_zone": draft.timezone if draft.kind == Schedule.Kind.CRON else "",
        },
    )


@login_required
@require_POST
def schedule_pause(request, uuid, schedule_uuid):
    schedule = _owned_schedule(request, uuid, schedule_uuid)
    services.schedule_pause(schedule=schedule)
    messages.info(request, f"Schedule paused: {services.describe(schedule)}.")
    return _back(schedule.agent)


@login_required
@require_POST
def schedule_resume(request, uuid, schedule_uuid):
    schedule = _owned_schedule(request, uuid, schedule_uuid)
    services.schedule_resume(schedule=schedule)
    messages.success(
        request,
        f"Schedule resumed: {services.describe(schedule)}. Runs missed while it was paused "
        f"are not made up for.",
    )
    return _back(schedule.agent)


@login_required
@require_POST
def schedule_delete(request, uuid, schedule_uuid):
    schedule = _owned_schedule(request, uuid, schedule_uuid)
    agent = schedule.agent
    words = services.describe(schedule)
    services.schedule_delete(schedule=schedule)
    messages.info(request, f"Schedule deleted: {words}. Its past runs are kept.")
    return _back(agent)
