from django.contrib import admin, messages
from django.utils import timezone

from .models import ApiToken
from .services import token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Read-mostly: staff see every token and can revoke; the secret exists only as a hash.

    Tokens are created by their owners on the API tokens page (the only place the token is
    shown), so there is no add form here.
    """

    list_display = ("name", "owner", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "owner__username", "owner__email")
    list_select_related = ("owner",)
    readonly_fields = (
        "uuid", "owner", "name", "prefix", "token_hash", "created_at", "last_used_at", "revoked_at",
    )  # fmt: skip
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        now = timezone.now()
        count = sum(token_revoke(token=token, at=now) for token in queryset)
        messages.success(request, f"{count} token(s) revoked.")
