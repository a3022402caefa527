"""The agent admin: every user's agents, their schedules and last run; pause, resume, delete.

Agents are written through ``agents.services`` like everywhere else: ``agent_create`` and
``agent_update`` save them (the form validates with ``agent_validate`` first, for messages next
to the fields), ``agent_delete`` deletes them, and refuses while runs are in progress.

Secrets and webhook secrets are write-only: the admin shows which names are set, never a value.
Secrets can be added, replaced or removed here (the same form as the agent's own page).

The config is JSON as stored; "In words" says what it does as the agent's page does (a flow's
steps name the agents they run, which its config holds by UUID).
"""

from __future__ import annotations

from collections import Counter

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from executions.models import Execution
from notifications.models import Channel
from ops.admin_actions import ActionReport, PauseResumeActions

from .forms import SecretsForm, queue_choices
from .kinds import kind_choices
from .models import Agent, Schedule, SkippedSlot
from .schedule_services import schedule_pause, schedule_resume
from .services import (
    AGENT_FIELDS,
    KEEP_FIELDS,
    LIMIT_FIELDS,
    NOTIFY_FIELDS,
    RUN_POLICY_FIELDS,
    WATCH_FIELDS,
    AgentBusy,
    agent_create,
    agent_delete,
    agent_delete_preview,
    agent_pause,
    agent_resume,
    agent_update,
    agent_validate,
)


class ServiceRefused(Exception):
    """``agent_create`` or ``agent_update`` refused what the form accepted (a rule of the
    services that ``agent_validate`` does not hold): the change form shows it again."""

    def __init__(self, error: ValidationError):
        super().__init__(error)
        self.error = error


class AgentAdminForm(forms.ModelForm):
    kind = forms.ChoiceField(choices=kind_choices)
    secrets_add = forms.CharField(
        required=False,
        label="Add or replace secrets",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One NAME=value per line. Values are stored encrypted and never shown again.",
    )
    secrets_remove = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Remove secrets"
    )
    # Not the model's field: the services set it (agent_create/agent_update), and refuse a
    # channel that is not the owner's.
    notify_channels = forms.ModelMultipleChoiceField(
        queryset=Channel.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Channels told",
        help_text="The owner's notification channels that hear of this agent's runs.",
    )

    class Meta:
        model = Agent
        # The fields the services accept, plus owner, kind and config; never the encrypted ones.
        fields = ("owner", "kind", "config", *AGENT_FIELDS)
        # The declared queues with what each is for (their choices are set per form).
        widgets = {"queue": forms.Select}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "queue" in self.fields:
            self.fields["queue"].widget.choices = queue_choices(self.instance.queue)
        if "breaker_threshold" in self.fields:
            # Blank is no breaker (0), as on the agent's page.
            self.fields["breaker_threshold"].required = False
        names = sorted(self.instance.secrets) if self.instance.pk else []
        self.fields["secrets_remove"].choices = [(n, n) for n in names]
        if not names:
            del self.fields["secrets_remove"]
        if "notify_channels" in self.fields:
            field = self.fields["notify_channels"]
            if self.instance.pk:
                # The owner's channels (their number is small); another owner's are refused.
                field.queryset = Channel.objects.filter(owner_id=self.instance.owner_id)
                self.initial["notify_channels"] = [
                    c.pk for c in self.instance.notify_channels.all()
                ]
            else:
                # Anyone's, named with their owner: the services refuse another owner's.
                field.widget = forms.SelectMultiple()
                field.label_from_instance = lambda c: f"{c.owner}: {c.name} ({c.kind})"
                field.queryset = Channel.objects.select_related("owner").order_by(
                    "owner__username", "name"
                )

    def clean_breaker_threshold(self):
        value = self.cleaned_data.get("breaker_threshold")
        return 0 if value is None else value

    #: Set by AgentAdmin when the services refused the last attempt to save this form.
    service_error: ValidationError | None = None

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        # The same validation as the pages and the API: the kind's config schema and this
        # installation's limits (agents.services.agent_validate).
        try:
            agent_validate(agent=self.instance)
        except ValidationError as exc:
            self.add_agent_errors(exc)
        else:
            if self.service_error is not None:
                self.add_agent_errors(self.service_error)

    def add_agent_errors(self, exc: ValidationError) -> None:
        """The services' per-field messages, next to the fields they name."""
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc.messages)
            return
        for field, errors in exc.message_dict.items():
            if field.startswith("config."):
                name = field.removeprefix("config.")
                self.add_error("config", [f"{name}: {e}" for e in errors])
            else:
                self.add_error(field if field in self.fields else None, errors)

    def clean(self):
        cleaned = super().clean()
        secrets = SecretsForm(
            {"add": cleaned.get("secrets_add", ""), "remove": cleaned.get("secrets_remove", [])},
            existing=sorted(self.instance.secrets) if self.instance.pk else [],
        )
        if secrets.is_valid():
            self.secret_changes = secrets.changes()
        else:
            for error in secrets.errors.get("add", []):
                self.add_error("secrets_add", error)
            for error in secrets.errors.get("remove", []):
                self.add_error("secrets_remove", error)
        return cleaned


class ScheduleInline(admin.TabularInline):
    """Read-only here: schedules are edited on the agent's page, whose services keep their next
    run in step."""

    model = Schedule
    extra = 0
    fields = ("kind", "cron", "timezone", "interval_seconds", "run_at", "is_paused", "next_run_at")
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(PauseResumeActions, admin.ModelAdmin):
    form = AgentAdminForm
    list_display = (
        "name",
        "owner",
        "kind",
        "paused",
        "schedules_display",
        "last_run",
        "queue",
    )
    list_filter = ("kind", "is_paused", "queue", "webhook_enabled")
    search_fields = ("name", "owner__username", "=uuid")
    search_help_text = "Part of an agent name or owner username, or an agent's UUID."
    list_select_related = ("owner",)
    autocomplete_fields = ("owner",)
    actions = ("pause_selected", "resume_selected", "delete_selected")
    inlines = (ScheduleInline,)
    readonly_fields = (
        "uuid",
        "config_summary",
        "webhook_enabled",
        "secrets_set",
        "webhook_secrets_set",
        "runs_link",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "uuid",
                    "owner",
                    "name",
                    "description",
                    "kind",
                    "config",
                    "config_summary",
                    "is_paused",
                )
            },
        ),
        ("Secrets (write-only)", {"fields": ("secrets_set", "secrets_add", "secrets_remove")}),
        ("Retries and limits", {"fields": RUN_POLICY_FIELDS}),
        ("Limits and protection", {"fields": LIMIT_FIELDS}),
        ("Logs and retention", {"fields": KEEP_FIELDS}),
        ("Notifications", {"fields": (*NOTIFY_FIELDS, "notify_channels")}),
        ("Against its usual", {"fields": WATCH_FIELDS}),
        ("Webhook trigger", {"fields": ("webhook_enabled", "webhook_secrets_set")}),
        (None, {"fields": ("runs_link", "created_at", "updated_at")}),
    )

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not obj.secrets:
            # "Remove secrets" only exists when some are set.
            fieldsets = [
                (
                    name,
                    {**opts, "fields": tuple(f for f in opts["fields"] if f != "secrets_remove")},
                )
                for name, opts in fieldsets
            ]
        return fieldsets

    def get_queryset(self, request):
        active = Schedule.objects.filter(agent=OuterRef("pk"), is_paused=False)
        last = Execution.objects.filter(agent=OuterRef("pk")).order_by("-created_at", "-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_schedules=Coalesce(
                    Subquery(
                        active.order_by().values("agent").annotate(n=Count("id")).values("n"),
                        output_field=IntegerField(),
                    ),
                    0,
                ),
                next_run_at=Subquery(
                    active.filter(next_run_at__isnull=False)
                    .order_by("next_run_at")
                    .values("next_run_at")[:1]
                ),
                last_status=Subquery(last.values("status")[:1]),
            )
        )

    # --- Writing through the services ----------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        refused = getattr(request, "conveyor_agent_refused", None)
        if refused is not None:
            form = type(form.__name__, (form,), {"service_error": refused})
        return form

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRefused as refused:
            # Nothing was saved (the view's transaction rolled back): the same form again,
            # with the services' messages on it.
            request.conveyor_agent_refused = refused.error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        """``obj`` carries the form's values; the services save them (secrets: the form's
        changes, merged by ``agent_update`` and given whole to ``agent_create``)."""
        secrets = getattr(form, "secret_changes", {})
        fields = {name: getattr(obj, name) for name in AGENT_FIELDS}
        # None (the field not on the form): the channels are kept.
        channels = form.cleaned_data.get("notify_channels")
        try:
            if change:
                agent_update(
                    agent=obj,
                    kind=obj.kind,
                    config=obj.config,
                    secrets=secrets,
                    notify_channels=channels,
                    **fields,
                )
            else:
                created = agent_create(
                    owner=obj.owner,
                    kind=obj.kind,
                    config=obj.config,
                    secrets={name: value for name, value in secrets.items() if value is not None},
                    notify_channels=channels,
                    **fields,
                )
        except ValidationError as exc:
            raise ServiceRefused(exc) from exc
        if not change:
            # The admin goes on with ``obj`` (inlines, history, redirect): the saved agent.
            obj.pk = created.pk
            obj.refresh_from_db()
            obj._state.adding = False

    def delete_model(self, request, obj):
        agent_delete(agent=obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except AgentBusy as exc:
            # Refused by agent_delete; the view's transaction (its history entry too) rolled back.
            self.message_user(request, exc.message, messages.ERROR)
            return redirect("admin:agents_agent_change", object_id)

    def delete_queryset(self, request, queryset):
        """One agent at a time through ``agent_delete``; the ones it refuses are kept, and the
        message says how many and why."""
        report = ActionReport("deleted")
        for agent in queryset:
            try:
                with transaction.atomic():
                    self.log_deletions(request, [agent])
                    agent_delete(agent=agent)
            except AgentBusy:
                report.skip("runs in progress")
            else:
                report.done()
        report.send(self, request)

    def get_deleted_objects(self, objs, request):
        """What the confirmation pages list: each agent with the number of executions and
        schedules that go with it, rather than every execution, attempt and log line.

        The executions go as part of the agent (``agent_delete``), so deleting an agent needs
        no permission to delete executions one by one (which their admin never grants).
        """
        listed, totals = [], Counter()
        for agent in objs:
            going = agent_delete_preview(agent=agent)
            totals.update(agents=1, executions=going.executions, schedules=going.schedules)
            url = reverse("admin:agents_agent_change", args=[agent.pk])
            details = [
                f"{_count(going.executions, 'execution')}, with "
                f"{'its' if going.executions == 1 else 'their'} attempts, status changes and logs",
                _count(going.schedules, "schedule"),
            ]
            if going.in_progress:
                details.append(
                    f"Runs in progress: {going.in_progress}. The agent is kept until they are "
                    "cancelled or finish."
                )
            listed += [format_html('Agent: <a href="{}">{}</a>', url, agent.name), details]
        model_count = {name: n for name, n in totals.items() if n}
        return listed, model_count, set(), []

    # --- Columns and fields ------------------------------------------------------------------

    @admin.display(description="Paused", ordering="is_paused")
    def paused(self, obj):
        if obj.is_paused:
            return format_html(
                '<span class="conveyor-badge conveyor-badge-paused">{}</span>', "paused"
            )
        return "—"

    @admin.display(description="Schedules", ordering="next_run_at")
    def schedules_display(self, obj):
        if not obj.active_schedules:
            return "—"
        when = (
            f" · next {obj.next_run_at:%Y-%m-%d %H:%M} UTC" if obj.next_run_at is not None else ""
        )
        return f"{obj.active_schedules} active{when}"

    @admin.display(description="Last run", ordering="last_status")
    def last_run(self, obj):
        if not obj.last_status:
            return "—"
        label = Execution.Status(obj.last_status).label
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}">{}</span>', obj.last_status, label
        )

    @admin.display(description="In words")
    def config_summary(self, obj):
        # What is stored: a form sent back with errors carries a config that may not be valid.
        stored = Agent.objects.filter(pk=obj.pk).first() if obj.pk else None
        kind = stored.kind_impl if stored is not None else None
        if kind is None:
            return "—"
        lines = kind.summary(stored.config or {}, sorted(stored.secrets))
        return format_html_join(mark_safe("<br>"), "{}: {}", lines) or "—"

    @admin.display(description="Secrets")
    def secrets_set(self, obj):
        return _names_set(obj.secrets if obj.pk else {})

    @admin.display(description="Webhook signing secrets")
    def webhook_secrets_set(self, obj):
        return _names_set(obj.webhook_secrets if obj.pk else {})

    @admin.display(description="Executions")
    def runs_link(self, obj):
        if not obj.pk:
            return "—"
        url = reverse("admin:executions_execution_changelist")
        return format_html(
            '<a href="{}?agent__id__exact={}">All executions of this agent</a>', url, obj.pk
        )

    # --- Actions -------------------------------------------------------------------------------

    def pause(self, agent):
        return agent_pause(agent=agent)

    def resume(self, agent):
        return agent_resume(agent=agent)

    @admin.action(description="Delete selected agents", permissions=["delete"])
    def delete_selected(self, request, queryset):
        """Django's delete action and its confirmation page, deleting through
        ``delete_queryset`` (which reports what it deleted and what it kept)."""
        if not request.POST.get("post"):
            return admin_actions.delete_selected(self, request, queryset)
        self.delete_queryset(request, queryset)
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names_set(secrets) -> str:
    names = sorted(secrets)
    if not names:
        return "not set"
    return "set: " + ", ".join(names)


@admin.register(Schedule)
class ScheduleAdmin(PauseResumeActions, admin.ModelAdmin):
    """Read-mostly: schedules are edited on the agent's page, where they are validated and
    their next run computed; here operators find them and pause or resume them."""

    list_display = (
        "agent",
        "kind",
        "cron",
        "interval_seconds",
        "timezone",
        "is_paused",
        "next_run_at",
        "last_slot_at",
    )
    list_filter = ("kind", "is_paused", "catch_up")
    search_fields = ("agent__name", "agent__owner__username", "uuid")
    list_select_related = ("agent",)
    readonly_fields = [f.name for f in Schedule._meta.fields]
    actions = ("pause_selected", "resume_selected")

    def has_add_permission(self, request):
        return False

    def pause(self, schedule):
        return schedule_pause(schedule=schedule)

    def resume(self, schedule):
        return schedule_resume(schedule=schedule)


@admin.register(SkippedSlot)
class SkippedSlotAdmin(admin.ModelAdmin):
    list_display = ("schedule", "slot_at", "reason", "at")
    list_select_related = ("schedule__agent",)
    search_fields = ("schedule__agent__name", "reason")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
