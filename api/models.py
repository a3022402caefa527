"""API tokens: a person's credentials for the REST API.

A token is ``cvy_`` followed by a random 32-byte url-safe secret. It is shown once, when it is
created; the database keeps its SHA-256 (``token_hash``) and its first characters (``prefix``)
so that the person can tell their tokens apart. Revoking sets ``revoked_at``: the row stays as a
record of what existed and when it was last used.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class ApiToken(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. “CI deploys”.")
    prefix = models.CharField(max_length=16, help_text="The token's first characters.")
    # SHA-256 of the whole token, hex: the only form in which the secret is kept.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Written at most once a minute per token (see api.authentication).
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The token page lists a person's tokens, newest first.
            models.Index(fields=["owner", "-created_at"], name="apitoken_owner_recent"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=Q(revoked_at__isnull=True),
                name="apitoken_active_name_unique_per_owner",
                violation_error_message="You already have a token with this name.",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
