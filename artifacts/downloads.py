"""An artifact as a download, for the page (``artifacts.views``) and the API alike.

It is someone's content, not Conveyor's: always an attachment (never shown inline), with
``X-Content-Type-Options: nosniff`` and a sandboxing Content-Security-Policy, so a browser never
runs or renders it as part of Conveyor's pages whatever its content type says.
"""

from __future__ import annotations

from django.http import FileResponse

from .models import Artifact, artifacts_storage
from .services import download_filename


class ArtifactMissing(Exception):
    """The row is there but the storage has no file for it (removed by hand, say)."""

    message = "This file is no longer stored."


def file_response(artifact: Artifact) -> FileResponse:
    try:
        handle = artifacts_storage().open(artifact.file.name, "rb")
    except FileNotFoundError:
        raise ArtifactMissing() from None
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=download_filename(artifact.name),
        content_type=artifact.content_type,
    )
    response.headers.setdefault("Content-Length", str(artifact.size))
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response
