"""Who may see an artifact: its execution's owner, and staff. For anyone else it does not
exist, as for an unknown id (a 404 on the page and in the API alike, as for executions)."""

from __future__ import annotations

import uuid

from .models import Artifact


def artifact_for_download(*, user, execution_id: uuid.UUID, artifact_id: uuid.UUID):
    """The artifact ``artifact_id`` of the execution ``execution_id`` if ``user`` may download
    it, else None."""
    if not user.is_authenticated:
        return None
    rows = Artifact.objects.select_related("execution").filter(
        uuid=artifact_id, execution__uuid=execution_id
    )
    if not user.is_staff:
        rows = rows.filter(execution__owner=user)
    return rows.first()
