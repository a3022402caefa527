from django.contrib import admin

from .models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "kind", "is_paused", "max_retries", "timeout", "queue")
    list_filter = ("kind", "is_paused", "queue")
    search_fields = ("name", "owner__username", "uuid")
    list_select_related = ("owner",)
    # Secrets are write-only: never shown here. Change them through the agent's own page.
    exclude = ("secrets",)
    readonly_fields = ("uuid", "secrets_set", "created_at", "updated_at")

    @admin.display(description="Secrets")
    def secrets_set(self, obj):
        names = sorted(obj.secrets) if obj.pk else []
        return ", ".join(f"{name}: set" for name in names) or "not set"
