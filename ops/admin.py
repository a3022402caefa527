"""The history of agents doing worse than their usual (ops.baseline): read-only, written by the
check every few minutes. The dashboard lists the open ones; here operators find the closed ones
too, with why each ended."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from executions.admin import ReadOnly
from executions.templatetags.conveyor import duration, percent

from .models import Regression


def figure(regression: Regression, value: float) -> str:
    """A figure as the agent page writes it: 3.2 s, 62%."""
    return duration(value) if regression.what == Regression.What.P95 else percent(value)


@admin.register(Regression)
class RegressionAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("what", "agent_link", "started_at", "ended_at", "end_reason", "figures")
    list_filter = ("what", "end_reason", ("ended_at", admin.EmptyFieldListFilter))
    search_fields = ("agent__name", "agent__owner__username")
    search_help_text = "The agent's name or its owner's username."
    list_select_related = ("agent__owner",)
    list_per_page = 50
    ordering = ("-started_at", "-id")
    fields = (
        "agent_link",
        "what",
        "started_at",
        "ended_at",
        "end_reason",
        "figures",
        "threshold_words",
        "execution_link",
    )
    readonly_fields = fields

    @admin.display(description="Agent", ordering="agent__name")
    def agent_link(self, obj: Regression):
        url = reverse("admin:agents_agent_change", args=[obj.agent_id])
        return format_html(
            '<a href="{}">{}</a> <span class="quiet">{}</span>',
            url,
            obj.agent.name,
            obj.agent.owner.username,
        )

    @admin.display(description="Last day against its usual")
    def figures(self, obj: Regression) -> str:
        label = "p95" if obj.what == Regression.What.P95 else "success rate"
        return (
            f"{label} {figure(obj, obj.last_value)} ({obj.last_runs} runs) against "
            f"{figure(obj, obj.usual_value)} ({obj.usual_runs} runs)"
        )

    @admin.display(description="Threshold")
    def threshold_words(self, obj: Regression) -> str:
        if obj.what == Regression.What.P95:
            return f"{obj.threshold}% slower"
        return f"{obj.threshold} points lower"

    @admin.display(description="Told with the run")
    def execution_link(self, obj: Regression):
        if obj.execution_id is None:
            return "—"
        url = reverse("admin:executions_execution_change", args=[obj.execution_id])
        return format_html('<a href="{}">{}</a>', url, obj.execution_id)
