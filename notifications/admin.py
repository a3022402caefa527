"""The notifications admin: read-only, for operators who follow what Conveyor sent.

* **Channels**: every owner's channels, by kind and whether they are on (and why one was turned
  off). Signing secrets are never shown, only which are set; a Slack-compatible URL, whose path
  is its secret, is shown by its host alone.
* **Deliveries**: every notification with its tries; filter by status, event and channel kind
  to find what is failing. "Send again" calls ``services.delivery_resend`` (same message id).
* **Completion hooks**: function agents' ``on_complete`` calls, with their tries and last
  error, so a failing hook is seen; "Run again" calls ``services.hook_rerun``.

Nothing is edited here: channels belong to their owners (their page and the API), and
deliveries and hooks are what the engine recorded.
"""

from __future__ import annotations

import uuid

import httpx
from django.contrib import admin
from django.contrib.admin import DateFieldListFilter
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from executions.admin import EstimatedCountPaginator, ReadOnly, precise_time
from ops.admin_actions import ActionReport

from . import services
from .models import Channel, CompletionHook, Delivery, DeliveryAttempt

# Most rows one action handles; the message says how many were left.
BULK_LIMIT = 500
# Badge colours (static/ops/admin.css) for each status.
DELIVERY_BADGE = {"pending": "pending", "delivered": "succeeded", "failed": "failed"}
HOOK_BADGE = {"pending": "pending", "running": "running", "done": "succeeded", "failed": "failed"}


def target_shown(channel: Channel) -> str:
    """Where a channel sends, without what makes its URL a secret: a Slack-compatible URL by its
    host alone (its path is the token), a webhook URL without its query string."""
    if channel.kind == Channel.Kind.EMAIL:
        return channel.target
    try:
        url = httpx.URL(channel.target)
    except (httpx.InvalidURL, ValueError):
        return "(not a valid URL)"
    origin = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
    if channel.kind == Channel.Kind.SLACK:
        return f"{origin}/…"
    return origin + url.path + ("?…" if url.query else "")


def _badge(css: str, label: str):
    return format_html(
        '<span class="conveyor-badge conveyor-badge-{}" data-status="{}">{}</span>', css, css, label
    )


def _execution_link(execution):
    url = reverse("admin:executions_execution_change", args=[execution.pk])
    return format_html(
        '<a href="{}" title="{}">{}</a> ({})',
        url,
        execution.uuid,
        str(execution.uuid)[:8],
        execution.agent.name,
    )


def _error_short(text: str, length: int = 60):
    """An error in a list's cell: its start, the whole of it on hover."""
    if not text:
        return "—"
    short = text if len(text) <= length else text[: length - 1] + "…"
    return format_html('<span title="{}">{}</span>', text, short)


# --- Channels ---------------------------------------------------------------------------------


@admin.register(Channel)
class ChannelAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("name", "owner", "kind", "target_display", "enabled", "created")
    list_filter = ("kind", "is_enabled")
    search_fields = ("name", "owner__username", "target", "=uuid")
    search_help_text = "Part of a channel's name, its owner's username or its address; or its UUID."
    list_select_related = ("owner",)
    ordering = ("owner__username", "name", "id")
    fields = (
        "uuid",
        "owner",
        "kind",
        "name",
        "target_display",
        "enabled",
        "secrets_set",
        "agents_display",
        "deliveries_link",
        "created",
    )
    readonly_fields = fields
    created = precise_time("created_at", "Created")

    @admin.display(description="Sends to")
    def target_display(self, obj):
        return target_shown(obj)

    @admin.display(description="On", ordering="is_enabled")
    def enabled(self, obj):
        if obj.is_enabled:
            return "on"
        if obj.disabled_reason:
            return format_html("off: {}", obj.disabled_reason)
        return "off"

    @admin.display(description="Signing secrets")
    def secrets_set(self, obj):
        if obj.kind != Channel.Kind.WEBHOOK:
            return "—"
        names = sorted(obj.secrets) if obj.secrets else []
        return ("set: " + ", ".join(names)) if names else "not set"

    @admin.display(description="Agents that tell it")
    def agents_display(self, obj):
        agents = obj.agents.order_by("name")[:50]
        return (
            format_html_join(
                ", ",
                '<a href="{}">{}</a>',
                ((reverse("admin:agents_agent_change", args=[a.pk]), a.name) for a in agents),
            )
            or "—"
        )

    @admin.display(description="Deliveries")
    def deliveries_link(self, obj):
        url = reverse("admin:notifications_delivery_changelist")
        return format_html(
            '<a href="{}?channel__id__exact={}">What was sent to it</a>', url, obj.pk
        )


# --- Deliveries -------------------------------------------------------------------------------


class DeliveryAttemptInline(ReadOnly, admin.TabularInline):
    model = DeliveryAttempt
    verbose_name = "try"
    verbose_name_plural = "Tries"
    extra = 0
    can_delete = False
    when = precise_time("at", "At")
    fields = ("number", "when", "status_code", "error", "seconds")
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(ReadOnly, admin.ModelAdmin):
    list_display = (
        "event_label",
        "execution_link",
        "channel_name",
        "status_badge",
        "tries",
        "last_error_short",
        "created",
    )
    list_display_links = ("event_label",)
    list_filter = (
        "status",
        "event",
        "channel__kind",
        "recovered",
        ("created_at", DateFieldListFilter),
    )
    search_fields = ("message_id",)
    search_help_text = (
        "A message id (msg_…, the webhook-id header), a delivery's or an execution's UUID, or "
        "part of a channel's name or its owner's username."
    )
    list_select_related = ("execution__agent", "channel__owner")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-id")
    actions = ("send_again",)
    inlines = (DeliveryAttemptInline,)
    fields = (
        "uuid",
        "execution_link",
        "event",
        "attempt",
        "recovered",
        "channel_display",
        "owner",
        "message_id",
        "status_badge",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_time",
        "published_time",
        "created",
        "delivered",
    )
    readonly_fields = fields

    created = precise_time("created_at", "Created")
    delivered = precise_time("delivered_at", "Delivered")
    next_attempt_time = precise_time("next_attempt_at", "Next try")
    published_time = precise_time("published_at", "Last sent to the broker")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            public_id = uuid.UUID(term)
        except ValueError:
            pass
        else:
            return queryset.filter(uuid=public_id) | queryset.filter(
                execution__uuid=public_id
            ), False
        if term.startswith("msg_"):
            return queryset.filter(message_id=term), False
        channels = Channel.objects.filter(name__icontains=term) | Channel.objects.filter(
            owner__username__icontains=term
        )
        ids = list(channels.values_list("pk", flat=True)[:1000])
        return queryset.filter(channel_id__in=ids), False

    @admin.display(description="Event", ordering="event")
    def event_label(self, obj):
        return format_html('<span title="{}">{}</span>', obj.uuid, obj.get_event_display())

    @admin.display(description="Channel", ordering="channel__name")
    def channel_name(self, obj):
        return format_html(
            '<span title="{}">{}</span>', obj.channel.get_kind_display(), obj.channel.name
        )

    @admin.display(description="Tries", ordering="attempts")
    def tries(self, obj):
        if obj.last_status_code is None:
            return obj.attempts
        return f"{obj.attempts} (last: {obj.last_status_code})"

    @admin.display(description="Execution")
    def execution_link(self, obj):
        return _execution_link(obj.execution)

    @admin.display(description="Channel")
    def channel_display(self, obj):
        url = reverse("admin:notifications_channel_change", args=[obj.channel_id])
        return format_html(
            '<a href="{}">{}</a> ({})', url, obj.channel.name, obj.channel.get_kind_display()
        )

    @admin.display(description="Owner", ordering="channel__owner__username")
    def owner(self, obj):
        return obj.channel.owner

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return _badge(DELIVERY_BADGE[obj.status], obj.get_status_display())

    @admin.display(description="Last error")
    def last_error_short(self, obj):
        return _error_short(obj.last_error)

    @admin.action(description="Send again (the same message, to the same channel)")
    def send_again(self, request, queryset):
        """Delivered or given-up deliveries are sent once more; pending ones are still being
        sent (a second message would race the first)."""
        report = ActionReport("sent again")
        rows = list(
            queryset.select_related("channel").order_by("created_at", "id")[: BULK_LIMIT + 1]
        )
        for delivery in rows[:BULK_LIMIT]:
            try:
                services.delivery_resend(delivery=delivery)
            except services.ResendRefused as refused:
                report.skip(refused.reason)
            else:
                report.done()
        if len(rows) > BULK_LIMIT:
            report.skip(
                f"beyond the {BULK_LIMIT} handled at once; run the action again",
                queryset.count() - BULK_LIMIT,
            )
        report.send(self, request)


# --- Completion hooks -------------------------------------------------------------------------


@admin.register(CompletionHook)
class CompletionHookAdmin(ReadOnly, admin.ModelAdmin):
    list_display = (
        "execution_link",
        "function",
        "status_badge",
        "attempts",
        "last_error_short",
        "created",
    )
    list_filter = ("status", "function", ("created_at", DateFieldListFilter))
    search_fields = ("function",)
    search_help_text = "An execution's UUID, or part of a function's name."
    list_select_related = ("execution__agent",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ("-created_at", "-id")
    actions = ("run_again",)
    fields = (
        "execution_link",
        "function",
        "status_badge",
        "attempts",
        "last_error_block",
        "next_attempt_time",
        "claimed_time",
        "created",
        "done",
    )
    readonly_fields = fields

    created = precise_time("created_at", "Recorded")
    done = precise_time("done_at", "Done")
    next_attempt_time = precise_time("next_attempt_at", "Next try")
    claimed_time = precise_time("claimed_at", "Last started")

    def get_search_results(self, request, queryset, search_term):
        try:
            return queryset.filter(execution__uuid=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    @admin.display(description="Execution", ordering="execution")
    def execution_link(self, obj):
        return _execution_link(obj.execution)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj):
        return _badge(HOOK_BADGE[obj.status], obj.get_status_display())

    @admin.display(description="Last error")
    def last_error_short(self, obj):
        return _error_short(obj.last_error)

    @admin.display(description="Last error")
    def last_error_block(self, obj):
        if not obj.last_error:
            return "—"
        return format_html('<pre class="conveyor-traceback">{}</pre>', obj.last_error)

    @admin.action(description="Run again (call the hook once more)")
    def run_again(self, request, queryset):
        """Done or given-up hooks are called once more; the service refuses (False) one that
        is waiting to run or running."""
        report = ActionReport("set to run again")
        rows = list(queryset.order_by("created_at", "id")[: BULK_LIMIT + 1])
        for hook in rows[:BULK_LIMIT]:
            if services.hook_rerun(hook=hook):
                report.done()
            else:
                report.skip("already waiting to run or running")
        if len(rows) > BULK_LIMIT:
            report.skip(
                f"beyond the {BULK_LIMIT} handled at once; run the action again",
                queryset.count() - BULK_LIMIT,
            )
        report.send(self, request)
