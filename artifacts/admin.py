"""Artifacts in the admin: read-only (the engine writes them; retention and deleting their
execution remove them), each with its download link."""

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from executions.admin import ReadOnly

from .models import Artifact


@admin.register(Artifact)
class ArtifactAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("name", "execution_link", "attempt", "content_type", "size_shown", "created_at")
    list_select_related = ("execution__agent",)
    search_fields = ("name", "execution__uuid")
    date_hierarchy = "created_at"
    fields = (
        "name",
        "execution_link",
        "attempt",
        "content_type",
        "size_shown",
        "created_at",
        "download",
    )
    readonly_fields = fields

    @admin.display(description="Execution")
    def execution_link(self, obj: Artifact):
        url = reverse("admin:executions_execution_change", args=[obj.execution_id])
        return format_html('<a href="{}">{}</a>', url, obj.execution.agent.name)

    @admin.display(description="Size", ordering="size")
    def size_shown(self, obj: Artifact):
        return filesizeformat(obj.size)

    @admin.display(description="Download")
    def download(self, obj: Artifact):
        url = reverse("artifacts:download", args=[obj.execution.uuid, obj.uuid])
        return format_html('<a href="{}">Download “{}”</a>', url, obj.name)
