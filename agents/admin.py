"""The agent admin: every user's agents, their schedules and last run; pause and resume.

Secrets and webhook secrets are write-only: the admin shows which names are set, never a value.
Secrets can be added, replaced or removed here (the same form as the agent's own page).
"""

from __future__ import annotations

from collections import Counter

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html

from executions.models import Execution

from .forms import SecretsForm
from .kinds import kind_choices
from .models import Agent, Schedule, SkippedSlot
from .secrets import Secrets
from .services import AGENT_FIELDS, agent_pause, agent_resume, agent_validate


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

    class Meta:
        model = Agent
        # The fields the services accept, plus owner, kind and config; never the encrypted ones.
        fields = ("owner", "kind", "config", *AGENT_FIELDS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = sorted(self.instance.secrets) if self.instance.pk else []
        self.fields["secrets_remove"].choices = [(n, n) for n in names]
        if not names:
            del self.fields["secrets_remove"]

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        # The same validation as the pages and the API: the kind's config schema and this
        # installation's limits (agents.services.agent_validate).
        try:
            agent_validate(agent=self.instance)
        except ValidationError as exc:
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
    """Read-only here: schedules are edited on the agent's page, which keeps their next run and
    the beat entries in step."""

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
class AgentAdmin(admin.ModelAdmin):
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
    actions = ("pause_selected", "resume_selected")
    inlines = (ScheduleInline,)
    readonly_fields = (
        "uuid",
        "webhook_enabled",
        "secrets_set",
        "webhook_secrets_set",
        "runs_link",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("uuid", "owner", "name", "description", "kind", "config", "is_paused")}),
        ("Secrets (write-only)", {"fields": ("secrets_set", "secrets_add", "secrets_remove")}),
        (
            "Retries and limits",
            {
                "fields": (
                    "max_retries",
                    "retry_backoff",
                    "retry_backoff_max",
                    "retry_jitter",
                    "retry_on",
                    "timeout",
                    "queue",
                    "priority",
                    "overlap_policy",
                )
            },
        ),
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

    def save_model(self, request, obj, form, change):
        changes = getattr(form, "secret_changes", {})
        if changes:
            merged = obj.secrets.reveal()
            for name, value in changes.items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            obj.secrets = Secrets(merged)
        super().save_model(request, obj, form, change)

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

    @admin.action(description="Pause selected agents", permissions=["change"])
    def pause_selected(self, request, queryset):
        changed, skipped = 0, Counter()
        for agent in queryset:
            if agent_pause(agent=agent):
                changed += 1
            else:
                skipped["already paused"] += 1
        self.message_user(request, *_report(changed, "paused", skipped))

    @admin.action(description="Resume selected agents", permissions=["change"])
    def resume_selected(self, request, queryset):
        changed, skipped = 0, Counter()
        for agent in queryset:
            if agent_resume(agent=agent):
                changed += 1
            else:
                skipped["not paused"] += 1
        self.message_user(request, *_report(changed, "resumed", skipped))


def _names_set(secrets) -> str:
    names = sorted(secrets)
    if not names:
        return "not set"
    return "set: " + ", ".join(names)


def _report(done: int, verb: str, skipped: Counter) -> tuple[str, int]:
    text = f"{done} {verb}."
    if skipped:
        reasons = "; ".join(f"{reason} ({n})" for reason, n in skipped.most_common())
        text += f" {sum(skipped.values())} skipped: {reasons}."
    return text, messages.SUCCESS if done and not skipped else messages.WARNING


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
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

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_selected(self, request, queryset):
        from .schedule_services import schedule_pause

        changed, skipped = 0, Counter()
        for schedule in queryset:
            if schedule_pause(schedule=schedule):
                changed += 1
            else:
                skipped["already paused"] += 1
        self.message_user(request, *_report(changed, "paused", skipped))

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_selected(self, request, queryset):
        from .schedule_services import schedule_resume

        changed, skipped = 0, Counter()
        for schedule in queryset:
            if schedule_resume(schedule=schedule):
                changed += 1
            else:
                skipped["not paused"] += 1
        self.message_user(request, *_report(changed, "resumed", skipped))


@admin.register(SkippedSlot)
class SkippedSlotAdmin(admin.ModelAdmin):
    list_display = ("schedule", "slot_at", "reason", "at")
    list_select_related = ("schedule__agent",)
    search_fields = ("schedule__agent__name", "reason")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
