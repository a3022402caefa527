"""The execution admin: read-mostly, built for tables of millions of rows.

* Nothing is edited here. Retry and cancel are actions that call ``executions.services`` and
  report what they did and what they skipped, and why.
* The list never counts the whole table: ``EstimatedCountPaginator`` reads Postgres' row
  estimate when no filter applies and stops counting a filtered list at 10,000, and the date
  filter needs no query (no date hierarchy, whose year/month links scan every row).
* Search takes an execution UUID (exact, through its unique index), or part of an agent name or
  owner username (matched in the small agents and users tables first).
* Flows: a flow's page lists its steps (``FlowStep``) with a link to each step's execution; a
  step's page links to its flow. The list filters by trigger (``Flow``: the steps' runs) and
  by whether an execution is a flow's step.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import uuid
from datetime import timedelta
from functools import cached_property

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import DateFieldListFilter
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Exists, OuterRef, Q, Subquery, Value
from django.db.models.functions import Concat
from django.forms.models import BaseInlineFormSet
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agents.models import Agent
from notifications.models import CompletionHook, Delivery
from ops.admin_actions import ActionReport

from .humanize import seconds_in_words
from .models import (
    BulkAction,
    Destination,
    Execution,
    ExecutionAttempt,
    ExecutionEvent,
    ExecutionLog,
    FlowStep,
    Limiter,
)
from .selectors import explain_wait
from .services import ExecutionRefused, execution_cancel, execution_retry

Status = Execution.Status

# Most executions one retry or cancel action handles; the message says how many were left.
BULK_LIMIT = 500
# Most agents (and owners) a name search matches.
SEARCH_IDS = 1000
# Log lines the detail page shows (the latest).
LOG_LINES = 200


def precise_time(field: str, description: str):
    """A read-only column showing ``field`` to the millisecond in the viewer's time zone (the
    admin's own format stops at the minute, too coarse for following a run)."""

    @admin.display(description=description, ordering=field)
    def show(self, obj):
        value = getattr(obj, field)
        if value is None:
            return "—"
        return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S.%f}"[:-3]

    return show


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to ``count_up_to``, except the unfiltered list on Postgres: there it
    reads the planner's row estimate (``pg_class.reltuples``, kept fresh by autovacuum) instead
    of counting millions of rows on every page view. A filtered list with more rows than that
    (e.g. every failed run, not retried, of a big table) says "more than 10,000" and pages
    through its first ones: counting them all would cost more than the page."""

    #: Tables smaller than this are counted exactly (cheap, and an estimate would look odd).
    estimate_above = 50_000
    #: A filtered list counts its rows up to this many.
    count_up_to = 10_000

    is_estimate = False
    is_capped = False

    @cached_property
    def count(self):
        estimate = self.estimate()
        if estimate is not None:
            self.is_estimate = True
            return estimate
        # SELECT COUNT(*) FROM (SELECT ... LIMIT n + 1): stops at the first n + 1 rows.
        counted = self.object_list.order_by()[: self.count_up_to + 1].count()
        if counted > self.count_up_to:
            self.is_capped = True
            return self.count_up_to
        return counted

    def estimate(self) -> int | None:
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor != "postgresql" or queryset.query.where:
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        # -1: never analysed yet.
        if row is None or row[0] < max(self.estimate_above, 0):
            return None
        return int(row[0])


class RetriedFilter(admin.SimpleListFilter):
    """Whether someone already ran the execution again; "failed, not retried" is the dead-letter
    set still waiting for a decision."""

    title = "retried"
    parameter_name = "retried"

    def lookups(self, request, model_admin):
        return (("no", "Not retried yet"), ("yes", "Retried"))

    def queryset(self, request, queryset):
        retried = Exists(Execution.objects.filter(retry_of=OuterRef("pk")))
        if self.value() == "no":
            return queryset.filter(~retried)
        if self.value() == "yes":
            return queryset.filter(retried)
        return queryset


class SlowerThanFilter(admin.SimpleListFilter):
    """Runs that took at least N seconds (the dashboard's p50/p95 links pass any N)."""

    title = "duration"
    parameter_name = "slower_than"

    def lookups(self, request, model_admin):
        choices = [
            ("1", "1 s or more"),
            ("10", "10 s or more"),
            ("60", "1 min or more"),
            ("600", "10 min or more"),
        ]
        value = self.value()
        if value and value not in dict(choices):
            choices.append((value, f"{value} s or more"))
        return choices

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            seconds = float(self.value())
        except ValueError:
            raise IncorrectLookupParameters("slower_than takes a number of seconds") from None
        return queryset.filter(duration__gte=timedelta(seconds=seconds))


class FlowStepFilter(admin.SimpleListFilter):
    """A flow's steps run as executions of their own: hide them to see only what people and
    systems started, or show only them."""

    title = "flow step"
    parameter_name = "flow_step"

    def lookups(self, request, model_admin):
        return (("no", "Not a flow's step"), ("yes", "Flows' steps"))

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(parent__isnull=True)
        if self.value() == "yes":
            return queryset.filter(parent__isnull=False)
        return queryset


class ReadOnly:
    """Admin pages (and inlines) of rows only the engine writes: nothing is added, changed or
    deleted by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(ReadOnly, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class AttemptInline(ReadOnlyInline):
    model = ExecutionAttempt
    started = precise_time("started_at", "Started")
    finished = precise_time("finished_at", "Finished")
    readonly_fields = ("started", "finished")
    fields = (
        "number",
        "started",
        "finished",
        "outcome",
        "error_category",
        "error_message",
        "retry_delay",
        "worker",
    )


class EventInline(ReadOnlyInline):
    model = ExecutionEvent
    verbose_name_plural = "Status changes"
    when = precise_time("at", "At")
    readonly_fields = ("when",)
    fields = ("when", "from_status", "to_status", "attempt", "reason")


class LatestLogsFormSet(BaseInlineFormSet):
    """Only the latest LOG_LINES lines: an execution may have logged thousands."""

    def get_queryset(self):
        if not hasattr(self, "_latest"):
            latest = super().get_queryset().order_by("-id")[:LOG_LINES]
            self._latest = list(latest)[::-1]
        return self._latest


class LogInline(ReadOnlyInline):
    model = ExecutionLog
    formset = LatestLogsFormSet
    verbose_name_plural = f"Logs (the latest {LOG_LINES} lines)"
    when = precise_time("at", "At")
    readonly_fields = ("when",)
    fields = ("when", "attempt", "level", "message")


class FlowStepsFormSet(BaseInlineFormSet):
    """The steps with the executions they link to, in one query."""

    def get_queryset(self):
        if not hasattr(self, "_steps"):
            self._steps = super().get_queryset().select_related("execution", "reused_from")
        return self._steps


class FlowStepInline(ReadOnlyInline):
    """A flow's steps, in order; each step's run has its own execution page."""

    model = FlowStep
    fk_name = "flow"
    formset = FlowStepsFormSet
    verbose_name = "step"
    verbose_name_plural = "Steps"
    started = precise_time("started_at", "Started")
    finished = precise_time("finished_at", "Finished")
    readonly_fields = (
        "step",
        "type",
        "status_badge",
        "run_link",
        "result_json",
        "note",
        "started",
        "finished",
    )
    fields = readonly_fields

    @admin.display(description="Step")
    def step(self, obj):
        if obj.group:
            return f"{obj.index + 1}. {obj.key} (in {obj.group})"
        return f"{obj.index + 1}. {obj.key}"

    @admin.display(description="Status")
    def status_badge(self, obj):
        text = obj.get_status_display()
        if obj.status == FlowStep.Status.WAITING and obj.wait_until is not None:
            text += f" until {timezone.localtime(obj.wait_until):%Y-%m-%d %H:%M:%S}"
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span>',
            obj.status,
            obj.status,
            text,
        )

    @admin.display(description="Run")
    def run_link(self, obj):
        if obj.execution_id is not None:
            return _execution_link(obj.execution)
        if obj.reused_from_id is not None:
            return format_html("Reused: {}", _execution_link(obj.reused_from))
        return "—"

    @admin.display(description="Result")
    def result_json(self, obj):
        return _json_block(obj.result)


class DeliveriesFormSet(BaseInlineFormSet):
    """The deliveries with their channels and tries, in two queries."""

    def get_queryset(self):
        if not hasattr(self, "_deliveries"):
            self._deliveries = (
                super().get_queryset().select_related("channel").prefetch_related("tries")
            )
        return self._deliveries


# Badge colours (static/ops/admin.css) of a delivery's and a completion hook's statuses.
NOTIFICATION_BADGE = {
    "pending": "pending",
    "running": "running",
    "delivered": "succeeded",
    "done": "succeeded",
    "failed": "failed",
}


class DeliveryInline(ReadOnlyInline):
    """What was sent about this execution, to which channel, and how each try went (the
    delivery's own page, linked, has every try in full and the "Send again" action)."""

    model = Delivery
    formset = DeliveriesFormSet
    verbose_name = "notification"
    verbose_name_plural = "Notifications sent"
    delivered = precise_time("delivered_at", "Delivered")
    readonly_fields = (
        "event_link",
        "channel_display",
        "status_badge",
        "tries_display",
        "last_error",
        "delivered",
    )
    fields = readonly_fields

    @admin.display(description="Event")
    def event_link(self, obj):
        url = reverse("admin:notifications_delivery_change", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.get_event_display())

    @admin.display(description="Channel")
    def channel_display(self, obj):
        return f"{obj.channel.name} ({obj.channel.get_kind_display()})"

    @admin.display(description="Status")
    def status_badge(self, obj):
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span>',
            NOTIFICATION_BADGE[obj.status],
            obj.status,
            obj.get_status_display(),
        )

    @admin.display(description="Tries")
    def tries_display(self, obj):
        tries = [
            f"{t.number}: {t.status_code if t.status_code is not None else 'no answer'}"
            for t in obj.tries.all()
        ]
        return ", ".join(tries) or "none yet"


def _completion_hook(execution: Execution) -> CompletionHook | None:
    """The execution's completion hook, if its function has one (asked twice per page: kept on
    the instance)."""
    if not hasattr(execution, "_admin_hook"):
        execution._admin_hook = CompletionHook.objects.filter(execution=execution).first()
    return execution._admin_hook


def _is_flow(execution: Execution) -> bool:
    """Run by the flow kind (or with steps: its agent may have changed kind since). Asked
    several times per page: kept on the instance."""
    if not hasattr(execution, "_admin_is_flow"):
        kind = execution.agent.kind_impl
        execution._admin_is_flow = bool(getattr(kind, "is_flow", False)) or execution.steps.exists()
    return execution._admin_is_flow


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "short_uuid",
        "status_short",
        "agent",
        "owner",
        "trigger",
        "attempts",
        "error_category",
        "duration_display",
        "created",
    )
    list_display_links = ("short_uuid",)
    list_filter = (
        "status",
        "wait_reason",
        RetriedFilter,
        "error_category",
        "trigger",
        FlowStepFilter,
        ("created_at", DateFieldListFilter),
        SlowerThanFilter,
        "agent__queue",
        "agent",
    )
    search_fields = ("uuid", "agent__name", "owner__username")
    search_help_text = "An execution's UUID, or part of an agent name or owner username."
    list_select_related = ("agent", "owner")
    list_per_page = 50
    show_full_result_count = False
    # Facet counts run one COUNT per filter choice over the whole table: not on this one.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    actions = ("retry_selected", "cancel_selected")
    inlines = (AttemptInline, EventInline, LogInline)
    fieldsets = (
        (None, {"fields": ("uuid", "agent_link", "owner", "trigger", "status_badge")}),
        (
            "Progress and time",
            {
                "fields": (
                    "attempts",
                    "progress_display",
                    "created_time",
                    "started_time",
                    "finished_time",
                    "duration_display",
                    "wait_display",
                    "next_attempt_time",
                    "not_before_time",
                    "published_time",
                    "heartbeat_time",
                    "checkpoint_time",
                )
            },
        ),
        (
            "Error",
            {"fields": ("error_category", "error_title", "error_message", "traceback")},
        ),
        ("Input and result", {"fields": ("input_json", "result_json", "checkpoint_json")}),
        (
            "Related",
            {
                "classes": ("collapse",),
                "fields": (
                    "retry_of_link",
                    "retried_as_links",
                    "schedule",
                    "scheduled_for_time",
                    "idempotency_key",
                    "celery_task_id",
                    "notified",
                ),
            },
        ),
    )

    # Shown, second, on the page of a flow's step (its flow) and of a flow (its time limit).
    step_fieldset = ("Flow", {"fields": ("parent_link", "step_display")})
    flow_fieldset = ("Flow", {"fields": ("deadline_time",)})
    # Shown before "Related" when the agent's function has an on_complete hook.
    hook_fieldset = ("Completion hook", {"fields": ("completion_hook_display",)})

    # The detail page is read-only: every field it shows, in the fieldsets' order.
    readonly_fields = tuple(
        name
        for _, options in (*fieldsets, step_fieldset, flow_fieldset, hook_fieldset)
        for name in options["fields"]
    )

    created_time = precise_time("created_at", "Created")
    started_time = precise_time("started_at", "Started")
    finished_time = precise_time("finished_at", "Finished")
    next_attempt_time = precise_time("next_attempt_at", "Next attempt")
    not_before_time = precise_time("not_before", "Not before")
    published_time = precise_time("published_at", "Last sent to the broker")

    @admin.display(description="Waiting")
    def wait_display(self, obj):
        """Why it waits and until when: the explanation its page and the API show, with the
        runs it waits for linked."""
        wait = explain_wait(obj)
        if wait is None:
            return "—"
        runs = format_html_join(
            ", ", '<a href="{}">{}</a> ({})',
            ((_change_url(r), str(r.uuid)[:8], r.get_status_display().lower()) for r in wait.runs),
        )  # fmt: skip
        return format_html(
            "{}{}{}",
            wait.message,
            format_html("<br>{}: {}", wait.runs_label, runs) if wait.runs else "",
            format_html("<br>Waits on <code>{}</code>", wait.waits_on) if wait.waits_on else "",
        )

    heartbeat_time = precise_time("heartbeat_at", "Heartbeat")
    scheduled_for_time = precise_time("scheduled_for", "Scheduled for")
    checkpoint_time = precise_time("checkpoint_at", "Last checkpoint")
    deadline_time = precise_time("deadline_at", "Time limit ends")

    def get_fieldsets(self, request, obj=None):
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and obj.parent_id is not None:
            fieldsets.insert(1, self.step_fieldset)
        elif obj is not None and _is_flow(obj):
            fieldsets.insert(1, self.flow_fieldset)
        if obj is not None and _completion_hook(obj) is not None:
            fieldsets.insert(len(fieldsets) - 1, self.hook_fieldset)
        return fieldsets

    def get_inlines(self, request, obj):
        inlines = list(self.inlines)
        if obj is not None and obj.deliveries.exists():
            inlines.insert(inlines.index(EventInline) + 1, DeliveryInline)
        if obj is not None and _is_flow(obj):
            inlines.insert(0, FlowStepInline)
        return inlines

    # --- Read-mostly -------------------------------------------------------------------------

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Executions are the record of what ran: they go only with their agent (agent_delete).
        return False

    def has_retry_permission(self, request):
        return request.user.has_perm("executions.change_execution")

    def has_cancel_permission(self, request):
        return request.user.has_perm("executions.change_execution")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/retry/",
                view(self.retry_view),
                name="executions_execution_retry",
            ),
            path(
                "<path:object_id>/cancel/",
                view(self.cancel_view),
                name="executions_execution_cancel",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        execution = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "show_retry": bool(
                execution and execution.can_retry and self.has_retry_permission(request)
            ),
            "show_cancel": bool(
                execution and execution.can_cancel and self.has_cancel_permission(request)
            ),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def retry_view(self, request, object_id):
        """The detail page's Retry button: a new execution with the same input."""
        execution = self._posted_object(request, object_id, self.has_retry_permission)
        try:
            new = execution_retry(execution=execution, by=request.user.get_username())
        except ExecutionRefused as exc:
            self.message_user(request, exc.message, messages.WARNING)
            return redirect(_change_url(execution))
        self.message_user(request, f"Retried as {new.uuid}.", messages.SUCCESS)
        return redirect(_change_url(new))

    def cancel_view(self, request, object_id):
        """The detail page's Cancel button."""
        execution = self._posted_object(request, object_id, self.has_cancel_permission)
        try:
            execution_cancel(execution=execution, by=request.user.get_username())
        except ExecutionRefused as exc:
            self.message_user(request, exc.message, messages.WARNING)
        else:
            self.message_user(request, "Cancelled.", messages.SUCCESS)
        return redirect(_change_url(execution))

    def _posted_object(self, request, object_id, allowed) -> Execution:
        if request.method != "POST":
            raise PermissionDenied("Use the button on the execution's page.")
        if not allowed(request):
            raise PermissionDenied
        execution = self.get_object(request, object_id)
        if execution is None:
            raise Http404("No such execution.")
        return execution

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(uuid=uuid.UUID(term)), False
        except ValueError:
            pass
        # Ids first (two small tables), then a plain "agent_id IN (...) OR owner_id IN (...)"
        # that Postgres answers from the two foreign-key indexes, rather than an OR of
        # subqueries that makes it read the whole table.
        agents = list(
            Agent.objects.filter(name__icontains=term).values_list("pk", flat=True)[:SEARCH_IDS]
        )
        owners = list(
            get_user_model()
            .objects.filter(username__icontains=term)
            .values_list("pk", flat=True)[:SEARCH_IDS]
        )
        return queryset.filter(Q(agent_id__in=agents) | Q(owner_id__in=owners)), False

    # --- Columns and fields ------------------------------------------------------------------

    @admin.display(description="Execution", ordering="created_at")
    def short_uuid(self, obj):
        return format_html('<span title="{}">{}</span>', obj.uuid, str(obj.uuid)[:8])

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span>',
            obj.status,
            obj.status,
            obj.status_label,
        )

    @admin.display(description="Status", ordering="status")
    def status_short(self, obj):
        """The list's badge: the status alone (the attempts have their own column)."""
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span>',
            obj.status,
            obj.status,
            obj.get_status_display(),
        )

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        local = timezone.localtime(obj.created_at)
        return format_html(
            '<span title="{}">{}</span>', local.isoformat(), f"{local:%Y-%m-%d %H:%M:%S}"
        )

    @admin.display(description="Attempts", ordering="attempt")
    def attempts(self, obj):
        return f"{obj.attempt}/{obj.max_attempts}"

    @admin.display(description="Duration", ordering="duration")
    def duration_display(self, obj):
        if obj.duration is None:
            return "—"
        seconds = obj.duration.total_seconds()
        return f"{seconds:.2f} s" if seconds < 10 else seconds_in_words(seconds)

    @admin.display(description="Progress")
    def progress_display(self, obj):
        return f"{obj.progress}%" + (f" · {obj.progress_message}" if obj.progress_message else "")

    @admin.display(description="Agent")
    def agent_link(self, obj):
        url = reverse("admin:agents_agent_change", args=[obj.agent_id])
        return format_html('<a href="{}">{}</a>', url, obj.agent.name)

    @admin.display(description="Traceback (staff only)")
    def traceback(self, obj):
        if not obj.error_detail:
            return "—"
        return format_html('<pre class="conveyor-traceback">{}</pre>', obj.error_detail)

    @admin.display(description="Input")
    def input_json(self, obj):
        return _json_block(obj.input)

    @admin.display(description="Result")
    def result_json(self, obj):
        return _json_block(obj.result)

    @admin.display(description="Retry of")
    def retry_of_link(self, obj):
        return _execution_link(obj.retry_of)

    @admin.display(description="Retried as")
    def retried_as_links(self, obj):
        retries = obj.retried_as.order_by("created_at")[:20]
        return (
            format_html_join(
                ", ",
                '<a href="{}">{}</a> ({})',
                (
                    (_change_url(r), str(r.uuid)[:8], r.get_status_display().lower())
                    for r in retries
                ),
            )
            or "—"
        )

    @admin.display(description="Flow")
    def parent_link(self, obj):
        if obj.parent is None:
            return "—"
        return format_html("{} of “{}”", _execution_link(obj.parent), obj.parent.agent.name)

    @admin.display(description="Step")
    def step_display(self, obj):
        if not obj.step_key:
            return "—"
        if obj.step_index is None:
            return obj.step_key
        return f"{obj.step_key} (step {obj.step_index + 1} of the flow)"

    @admin.display(description="Checkpoint")
    def checkpoint_json(self, obj):
        return _json_block(obj.checkpoint)

    @admin.display(description="Status")
    def completion_hook_display(self, obj):
        hook = _completion_hook(obj)
        if hook is None:
            return "—"
        url = reverse("admin:notifications_completionhook_change", args=[hook.pk])
        tries = "1 try" if hook.attempts == 1 else f"{hook.attempts} tries"
        facts = [tries]
        if hook.status == CompletionHook.Status.PENDING and hook.next_attempt_at is not None:
            facts.append(f"next at {timezone.localtime(hook.next_attempt_at):%Y-%m-%d %H:%M:%S}")
        if hook.last_error and hook.status != CompletionHook.Status.DONE:
            facts.append(f"last error: {hook.last_error.splitlines()[0][:200]}")
        return format_html(
            '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span> '
            '{} · {} · <a href="{}">details</a>',
            NOTIFICATION_BADGE.get(hook.status, "pending"),
            hook.status,
            hook.get_status_display(),
            hook.function,
            " · ".join(facts),
            url,
        )

    # --- Actions -------------------------------------------------------------------------------

    @admin.action(
        description="Retry selected failed or cancelled executions", permissions=["retry"]
    )
    def retry_selected(self, request, queryset):
        self._each(request, queryset.select_related("agent"), execution_retry, verb="retried")

    @admin.action(
        description="Cancel selected queued, retrying or running executions", permissions=["cancel"]
    )
    def cancel_selected(self, request, queryset):
        self._each(request, queryset, execution_cancel, verb="cancelled")

    def _each(self, request, queryset, service, *, verb: str) -> None:
        """Call ``service`` on each selected execution (at most BULK_LIMIT, oldest first) and
        report; the service's refusals are the reasons for skipping (see ``_refusal``)."""
        report = ActionReport(verb)
        rows = list(queryset.order_by("created_at", "id")[: BULK_LIMIT + 1])
        by = request.user.get_username()
        for execution in rows[:BULK_LIMIT]:
            try:
                service(execution=execution, by=by)
            except ExecutionRefused as exc:
                report.skip(_refusal(exc))
            else:
                report.done()
        if len(rows) > BULK_LIMIT:
            report.skip(
                f"beyond the {BULK_LIMIT} handled at once; run the action again",
                queryset.count() - BULK_LIMIT,
            )
        report.send(self, request)


def _refusal(exc: ExecutionRefused) -> str:
    return {
        "agent_paused": "agent paused",
        "already_finished": "already finished",
        "already_retried": "already retried",
        "not_retryable": "not failed or cancelled",
        "busy": "status kept changing",
    }.get(exc.code, exc.code.replace("_", " "))


def _change_url(execution: Execution) -> str:
    return reverse("admin:executions_execution_change", args=[execution.pk])


def _execution_link(execution: Execution | None):
    if execution is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a> ({})',
        _change_url(execution),
        execution.uuid,
        execution.get_status_display().lower(),
    )


def _json_block(value):
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return format_html('<pre class="conveyor-json">{}</pre>', text)


@admin.register(FlowStep)
class FlowStepAdmin(admin.ModelAdmin):
    """Every flow's steps, read-only (the engine writes them): find the steps that wait or run
    now, or those that failed; each links to its flow and to the execution that ran it."""

    list_display = ("flow_link", "step", "type", "status_badge", "run_link", "started", "finished")
    list_filter = ("status", "type")
    search_fields = ("key",)
    search_help_text = "A flow execution's UUID, or a step's key."
    list_select_related = ("flow__agent", "execution", "reused_from")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ("-id",)
    fields = (
        "flow_link",
        "step",
        "type",
        "status_badge",
        "run_link",
        "note",
        "error_category",
        "started",
        "finished",
        "wait_until_time",
        "result_json",
        "spec_json",
    )
    readonly_fields = fields

    step = FlowStepInline.step
    status_badge = FlowStepInline.status_badge
    run_link = FlowStepInline.run_link
    result_json = FlowStepInline.result_json
    started = precise_time("started_at", "Started")
    finished = precise_time("finished_at", "Finished")
    wait_until_time = precise_time("wait_until", "Waits until")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # they go with their flow's execution

    def get_search_results(self, request, queryset, search_term):
        try:
            return queryset.filter(flow__uuid=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description="Flow", ordering="flow")
    def flow_link(self, obj):
        return format_html(
            '<a href="{}">{}</a> ({})',
            _change_url(obj.flow),
            str(obj.flow.uuid)[:8],
            obj.flow.agent.name,
        )

    @admin.display(description="Definition")
    def spec_json(self, obj):
        return _json_block(obj.spec)


# --- Capacity: destinations' limits (set by operators) and the limits' state (the engine's) ---


class DestinationForm(forms.ModelForm):
    class Meta:
        model = Destination
        fields = (
            "host",
            "rate_limit",
            "breaker_threshold",
            "breaker_window",
            "breaker_cooldown",
            "note",
        )
        help_texts = {
            "host": "The host name as written in the agents' URLs, e.g. api.example.com (no "
            "scheme, port or path). Every http agent calling it shares these limits.",
            "breaker_window": "Seconds within which those failures count as in a row.",
            "breaker_cooldown": "Seconds the circuit stays open before one probe run is let "
            "through; doubled each time the probe fails (at most an hour).",
            "note": "Why these limits (who asked, the provider's documented quota), for the "
            "next operator.",
        }

    def clean_host(self):
        host = self.cleaned_data["host"].strip().lower().rstrip(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # an IPv6 address as URLs write it
        if ":" in host:
            try:
                host = str(ipaddress.IPv6Address(host))
            except ValueError:
                host = ""  # a scheme or a port
        if "*" in host:
            raise forms.ValidationError(
                "A destination is one host: wildcards are not matched. Add one destination per "
                "host the agents call, e.g. api.example.com."
            )
        if not host or not (":" in host or re.fullmatch(r"[\w-]+(\.[\w-]+)*", host)):
            raise forms.ValidationError(
                "Write the host name alone, as in the agents' URLs: api.example.com, not "
                "https://api.example.com:443/v1."
            )
        return host


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    """The limits operators set per destination host, shared by every http agent that calls
    it (executions.capacity reads them within seconds of a change)."""

    form = DestinationForm
    list_display = (
        "host",
        "rate_limit_display",
        "breaker_display",
        "breaker_state",
        "note",
    )
    search_fields = ("host", "note")
    search_help_text = "Part of a host name or note."
    ordering = ("host",)

    def get_queryset(self, request):
        state = Limiter.objects.filter(key=Concat(Value("host:"), OuterRef("host"))).values(
            "state"
        )[:1]
        return super().get_queryset(request).annotate(limiter_state=Subquery(state))

    @admin.display(description="Rate limit", ordering="rate_limit")
    def rate_limit_display(self, obj):
        return obj.rate_limit or "none"

    @admin.display(description="Circuit breaker", ordering="breaker_threshold")
    def breaker_display(self, obj):
        if not obj.breaker_threshold:
            return "off"
        return (
            f"after {obj.breaker_threshold} failures in {seconds_in_words(obj.breaker_window)}, "
            f"cool-down {seconds_in_words(obj.breaker_cooldown)}"
        )

    @admin.display(description="Breaker now")
    def breaker_state(self, obj):
        state = getattr(obj, "limiter_state", None) or Limiter.State.CLOSED
        return Limiter.State(state).label if state in Limiter.State.values else state

    def save_model(self, request, obj, form, change):
        from .capacity import forget_destinations

        super().save_model(request, obj, form, change)
        forget_destinations()  # this process at once; workers within seconds

    def delete_model(self, request, obj):
        from .capacity import forget_destinations

        super().delete_model(request, obj)
        forget_destinations()


_UNREAD = object()


def _limit_agents(rows: list[Limiter]) -> dict[int, Agent]:
    """The agent (with its owner) of each ``agent:<id>`` limiter of ``rows``, in one query."""
    ids = {}
    for row in rows:
        scope, _, name = row.key.partition(":")
        if scope == "agent":
            with contextlib.suppress(ValueError):
                ids[row.pk] = uuid.UUID(name)
    agents = {
        a.uuid: a for a in Agent.objects.filter(uuid__in=ids.values()).select_related("owner")
    }
    return {pk: agents[u] for pk, u in ids.items() if u in agents}


@admin.register(Limiter)
class LimiterAdmin(ReadOnly, admin.ModelAdmin):
    """The state of every limit: a rate limit's recent starts, a circuit breaker's state.
    Written only by the engine (executions.capacity); an open breaker can be closed by hand
    here or on the operations dashboard."""

    list_display = (
        "limit_of",
        "state_display",
        "failures",
        "last_failure_short",
        "opened_if_open",
        "next_probe",
        "recent_starts",
        "updated",
    )
    list_filter = ("state",)
    search_fields = ("key",)
    search_help_text = "Part of a key: agent:<agent id>, queue:<name> or host:<host>."
    ordering = ("key",)
    actions = ("close_selected",)
    fields = (
        "key",
        "limit_of",
        "state_display",
        "failures",
        "first_failure_time",
        "last_failure",
        "opened",
        "next_probe",
        "probe_link",
        "cooldown",
        "recent_starts",
        "updated",
    )
    readonly_fields = fields

    opened = precise_time("opened_at", "Opened")
    next_probe = precise_time("probe_at", "Next probe")
    first_failure_time = precise_time("first_failure_at", "First failure in a row")
    updated = precise_time("updated_at", "Updated")

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        changelist.result_list = rows = list(changelist.result_list)
        agents = _limit_agents(rows)
        for row in rows:
            row.limit_agent = agents.get(row.pk)
        return changelist

    @admin.display(description="Limit of", ordering="key")
    def limit_of(self, obj):
        """Whose limit, in words: an agent (its owner and name, linked), a queue or a host."""
        scope, _, name = obj.key.partition(":")
        if scope == "agent":
            # The list reads a page's agents at once (get_changelist_instance); a row's own
            # page reads its one.
            agent = getattr(obj, "limit_agent", _UNREAD)
            if agent is _UNREAD:
                agent = _limit_agents([obj]).get(obj.pk)
            if agent is None:
                return f"a deleted agent ({name})"
            url = reverse("admin:agents_agent_change", args=[agent.pk])
            return format_html('the agent <a href="{}">{}/{}</a>', url, agent.owner, agent.name)
        if scope == "queue":
            return f"the queue “{name}”"
        if scope == "host":
            return f"the host {name}"
        return obj.key

    @admin.display(description="State", ordering="state")
    def state_display(self, obj):
        return obj.get_state_display()

    @admin.display(description="Opened", ordering="opened_at")
    def opened_if_open(self, obj):
        """When an open or half-open breaker opened; a closed one's last opening is history
        (shown on its page)."""
        if obj.state == Limiter.State.CLOSED:
            return "—"
        return self.opened(obj)

    @admin.display(description="Last failure")
    def last_failure_short(self, obj):
        if obj.state == Limiter.State.CLOSED:
            return "—"
        text = " ".join(obj.last_failure.split())
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description="Starts counted")
    def recent_starts(self, obj):
        return len(obj.starts or [])

    @admin.display(description="Probe run")
    def probe_link(self, obj):
        if not obj.probe_execution:
            return "—"
        return _execution_link(Execution.objects.filter(pk=obj.probe_execution).first())

    @admin.action(description="Close the selected breakers", permissions=["close"])
    def close_selected(self, request, queryset):
        from .capacity import breaker_close

        report = ActionReport("closed")
        by = request.user.get_username()
        for key in queryset.values_list("key", flat=True)[:BULK_LIMIT]:
            if breaker_close(key=key, by=by):
                report.done()
            else:
                report.skip("not open")
        report.send(self, request)

    def has_close_permission(self, request):
        # Staff may close a breaker, as on the operations dashboard.
        return request.user.is_active and request.user.is_staff


# --- Bulk actions (asked for by owners on the executions page or the API) ---------------------


@admin.register(BulkAction)
class BulkActionAdmin(ReadOnly, admin.ModelAdmin):
    """Who retried or cancelled executions in bulk, with which filter, and how it went:
    read-only, the record of an owner's action (executions.bulk)."""

    list_display = (
        "short_uuid",
        "action",
        "owner",
        "via",
        "status",
        "progress",
        "created",
        "finished",
    )
    list_display_links = ("short_uuid",)
    list_filter = ("action", "status", "via")
    search_fields = ("owner__username",)
    search_help_text = "The username of who asked for it."
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-created_at", "-id")
    fields = (
        "uuid",
        "action",
        "owner",
        "via",
        "status",
        "progress",
        "filter_json",
        "upto_id",
        "previewed",
        "total",
        "done",
        "skipped",
        "failed",
        "reasons_json",
        "error",
        "created",
        "started",
        "finished",
    )
    readonly_fields = fields

    created = precise_time("created_at", "Created")
    started = precise_time("started_at", "Started")
    finished = precise_time("finished_at", "Finished")

    @admin.display(description="Id")
    def short_uuid(self, obj):
        return str(obj.uuid)[:8]

    @admin.display(description="Progress")
    def progress(self, obj):
        return f"{obj.processed} of {obj.total}"

    @admin.display(description="Filter")
    def filter_json(self, obj):
        return _json_block(obj.filter)

    @admin.display(description="Skipped or failed, why")
    def reasons_json(self, obj):
        return _json_block(obj.reasons)
