from django.contrib import admin

from .models import Execution, ExecutionAttempt, ExecutionEvent, ExecutionLog


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AttemptInline(ReadOnlyInline):
    model = ExecutionAttempt
    fields = (
        "number",
        "started_at",
        "finished_at",
        "outcome",
        "error_category",
        "error_message",
        "retry_delay",
        "worker",
    )


class EventInline(ReadOnlyInline):
    model = ExecutionEvent
    fields = ("at", "from_status", "to_status", "attempt", "reason")


class LogInline(ReadOnlyInline):
    model = ExecutionLog
    fields = ("at", "attempt", "level", "message")


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = (
        "uuid",
        "agent",
        "owner",
        "status",
        "trigger",
        "attempt",
        "error_category",
        "duration",
        "created_at",
    )
    list_filter = ("status", "error_category", "trigger")
    search_fields = ("uuid", "agent__name", "owner__username")
    list_select_related = ("agent", "owner")
    show_full_result_count = False
    date_hierarchy = "created_at"
    inlines = (AttemptInline, EventInline, LogInline)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
