"""The verbs of API tokens: create (the only moment the secret exists), find, revoke."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .models import ApiToken

TOKEN_PREFIX = "cvy_"  # noqa: S105 (a prefix, not a secret)
# Characters of the token kept in clear to tell tokens apart: "cvy_" and 8 of the secret.
VISIBLE_CHARS = len(TOKEN_PREFIX) + 8
# last_used_at is written at most this often per token, so that a busy client does not turn
# every API call into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_create(*, owner, name: str) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the token itself, which is never available again."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the token a name, e.g. “CI deploys”."]})
    if len(name) > 100:
        raise ValidationError({"name": ["At most 100 characters."]})
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(owner=owner, name=name, prefix=plain[:VISIBLE_CHARS])
    token.token_hash = hash_token(plain)
    try:
        with transaction.atomic():
            token.save(force_insert=True)
    except IntegrityError:
        raise ValidationError({"name": ["You already have a token with this name."]}) from None
    return token, plain


def token_find(plain: str) -> ApiToken | None:
    """The active token ``plain`` stands for, with its owner; None if there is none.

    The lookup is by the SHA-256 of the token (a unique index): the secret itself is never
    compared, so there is no timing to measure.
    """
    if not plain.startswith(TOKEN_PREFIX) or len(plain) > 200:
        return None
    return (
        ApiToken.objects.select_related("owner")
        .filter(token_hash=hash_token(plain), revoked_at__isnull=True)
        .first()
    )


def token_touch(*, token: ApiToken, at: datetime | None = None) -> bool:
    """Record a use, unless one was recorded less than a minute ago. Returns whether it wrote."""
    at = at or timezone.now()
    if token.last_used_at is not None and at - token.last_used_at < LAST_USED_RESOLUTION:
        return False
    stale = at - LAST_USED_RESOLUTION
    written = ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale), pk=token.pk
    ).update(last_used_at=at)
    if written:
        token.last_used_at = at
    return bool(written)


def token_revoke(*, token: ApiToken, at: datetime | None = None) -> bool:
    """Revoke: the token stops working at once. Returns False if it was already revoked."""
    at = at or timezone.now()
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=at)
    if revoked:
        token.revoked_at = at
    return bool(revoked)
