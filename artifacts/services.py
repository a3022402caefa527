"""Saving and deleting artifacts: the one place for their rules.

``artifact_save`` is what ``ctx.save_artifact`` calls while an agent runs:

1. **Read** the data (bytes, text as UTF-8, or a file object read in chunks, never more than one
   byte past the per-file limit) and mask the agent's secret values in it, as its logs are.
2. **Check** the name, the content type (guessed from the name when not given) and the limits:
   ``CONVEYOR_ARTIFACT_MAX_BYTES`` per file, ``CONVEYOR_ARTIFACTS_MAX_BYTES`` and
   ``CONVEYOR_ARTIFACTS_MAX_COUNT`` per execution. A refusal is an :class:`ArtifactRefused`
   (a ValueError) whose message the run's error shows.
3. **Store** the file as ``<execution uuid>/<artifact uuid>`` in the ``artifacts`` storage, then
   **record** it in its own transaction, committed at once: a run killed later keeps it. Saving
   a name the execution already has *replaces* that file (the newest wins: a retried attempt
   that saves its output again does not fail for it, and the run keeps one file per name);
   files of other names saved by an earlier attempt stay.

Deleting: ``artifacts_delete`` (retention) deletes the rows of some executions; however a row
goes (that, an execution or agent deleted by cascade, the admin), ``on_artifact_deleted``
removes its file once the deletion commits, and not at all if it rolls back.
"""

from __future__ import annotations

import logging
import mimetypes
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Count, Sum
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from agents.kinds.base import PermanentError, is_media_type
from executions.models import Execution

from .models import Artifact, artifacts_storage

logger = logging.getLogger("conveyor.artifacts")

NAME_MAX = 200
OCTET_STREAM = "application/octet-stream"
_CHUNK = 1024 * 1024


class ArtifactRefused(PermanentError, ValueError):
    """The file was not saved."""

    # Saving it again fails the same way: the run fails with the message, not retried.
    category = "internal"


def human_size(size: int) -> str:
    """``10485760`` -> ``"10.0 MB"`` (as the pages show sizes)."""
    return str(filesizeformat(size)).replace("\xa0", " ")


def clean_name(name: Any) -> str:
    """The name as it is kept: text, trimmed, 1 to 200 characters, no control characters."""
    if not isinstance(name, str):
        raise ArtifactRefused(
            f"A file's name must be text, such as “report.csv”, not {type(name).__name__}."
        )
    name = name.strip()
    if not name:
        raise ArtifactRefused("Give the file a name, such as “report.csv”.")
    if len(name) > NAME_MAX:
        raise ArtifactRefused(
            f"The file name “{name[:40]}…” is {len(name)} characters long; at most {NAME_MAX}."
        )
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise ArtifactRefused(
            f"The file name {name!r} contains a control character or a line break; use "
            "letters, digits and punctuation."
        )
    return name


def download_filename(name: str) -> str:
    """What a download offers as its file name: the last part of ``name`` (a name may look like
    a path), without characters a file name or a header cannot hold. The header itself is
    written by Django (``content_disposition_header``), which quotes and encodes it."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(
        "_" if unicodedata.category(ch)[0] == "C" or ch in '"<>:|?*' else ch for ch in base
    )
    base = base.strip(" .")
    return base or "file"


def guess_content_type(name: str, *, text: bool) -> str:
    """The content type of a file called ``name``; ``text``: the data was given as text (so it
    is UTF-8)."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding or not guessed:  # "x.csv.gz": the bytes are gzip, not CSV
        guessed = "application/gzip" if encoding == "gzip" else None
    if guessed is None:
        return "text/plain; charset=utf-8" if text else OCTET_STREAM
    if text and guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed


def read_data(data: Any, *, limit: int) -> tuple[bytes, bool]:
    """``data`` as bytes, read no further than ``limit`` + 1 bytes; and whether it was text."""
    if isinstance(data, str):
        return data.encode("utf-8", "replace"), True
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), False
    read = getattr(data, "read", None)
    if not callable(read):
        raise TypeError(
            "ctx.save_artifact takes the file's content as bytes, text (str) or a file opened "
            f"for reading, not {type(data).__name__}."
        )
    chunks: list[bytes] = []
    total, text = 0, False
    while total <= limit:
        chunk = read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        if isinstance(chunk, str):  # a file opened in text mode: kept as UTF-8
            chunk, text = chunk.encode("utf-8", "replace"), True
        chunks.append(bytes(chunk))
        total += len(chunk)
    return b"".join(chunks), text


def artifact_save(
    *,
    execution: Execution,
    attempt: int,
    name: Any,
    data: Any,
    content_type: str | None = None,
    mask: Sequence[str] = (),
    at: datetime | None = None,
) -> Artifact:
    """Save a file for ``execution`` (see the module docstring); returns its row.

    ``mask``: values (the agent's secrets) replaced with *** wherever they occur in the data.
    Raises :class:`ArtifactRefused` (a ValueError) for a bad name or content type, or a file
    over a limit; TypeError for data that is not bytes, text or a file.
    """
    at = at or timezone.now()
    name = clean_name(name)
    file_limit = settings.CONVEYOR_ARTIFACT_MAX_BYTES
    raw, text = read_data(data, limit=file_limit)
    if len(raw) > file_limit:
        # A file object is read no further than the limit: its whole size is not known.
        known = isinstance(data, str | bytes | bytearray | memoryview)
        size = f"{human_size(len(raw))}, " if known else ""
        raise ArtifactRefused(
            f"The file “{name}” is {size}larger than the {human_size(file_limit)} one file "
            "may be on this installation. Save a smaller file, or split it."
        )
    for value in mask:
        raw = raw.replace(value.encode("utf-8", "replace"), b"***")
    if content_type is None:
        content_type = guess_content_type(name, text=text)
    elif not is_media_type(content_type):
        raise ArtifactRefused(
            f"{content_type!r} is not a content type: give one such as “text/csv” or "
            "“application/json”, or leave it out to have it guessed from the file's name."
        )
    _check_execution_limits(execution=execution, name=name, size=len(raw))

    artifact = Artifact(
        uuid=uuid.uuid4(),
        execution=execution,
        attempt=attempt,
        name=name,
        content_type=content_type,
        size=len(raw),
        created_at=at,
    )
    storage = artifacts_storage()
    # Named by ids only: the agent's name for it never reaches the storage.
    artifact.file.name = storage.save(f"{execution.uuid}/{artifact.uuid}", ContentFile(raw))
    try:
        with transaction.atomic():
            # The same name again: the earlier file goes (once this commits), this one stays.
            replaced = Artifact.objects.filter(execution_id=execution.pk, name=name).delete()[0]
            artifact.save(force_insert=True)
    except BaseException:
        _remove_file(artifact.file.name)  # not recorded: not kept
        raise
    logger.info(
        "artifact saved",
        extra={
            "action": "artifact_saved",
            "execution_id": str(execution.uuid),
            "artifact_id": str(artifact.uuid),
            "bytes": artifact.size,
            "replaced": bool(replaced),
        },
    )
    return artifact


def _check_execution_limits(*, execution: Execution, name: str, size: int) -> None:
    # A file saved again under its name replaces it: it does not count twice.
    kept = (
        Artifact.objects.filter(execution_id=execution.pk)
        .exclude(name=name)
        .aggregate(files=Count("id"), total=Sum("size"))
    )
    most_files = settings.CONVEYOR_ARTIFACTS_MAX_COUNT
    if kept["files"] >= most_files:
        files = "1 file" if kept["files"] == 1 else f"{kept['files']} files"
        raise ArtifactRefused(
            f"“{name}” was not saved: this run already keeps {files}, the most one run may "
            "keep on this installation. Save fewer files (saving a name again replaces its "
            "file)."
        )
    most_bytes = settings.CONVEYOR_ARTIFACTS_MAX_BYTES
    total = (kept["total"] or 0) + size
    if total > most_bytes:
        raise ArtifactRefused(
            f"“{name}” ({human_size(size)}) was not saved: with it this run's files would "
            f"take {human_size(total)}, more than the {human_size(most_bytes)} one run may keep "
            "on this installation. Save fewer or smaller files."
        )


def artifacts_delete(*, execution_ids: Iterable[int]) -> int:
    """Delete the artifacts of the executions with these primary keys: the rows now, their
    files once the deletion commits (``on_artifact_deleted``). Returns how many rows went.
    Retention calls it for each batch of executions it removes."""
    ids = list(execution_ids)
    if not ids:
        return 0
    with transaction.atomic():
        deleted, _ = Artifact.objects.filter(execution_id__in=ids).delete()
    if deleted:
        logger.info(
            "artifacts deleted",
            extra={"action": "artifacts_deleted", "executions": len(ids), "artifacts": deleted},
        )
    return deleted


def on_artifact_deleted(sender, instance: Artifact, using: str | None = None, **kwargs) -> None:
    """post_delete of an Artifact (however the row went): its file goes once that commits."""
    if instance.file.name:
        transaction.on_commit(partial(_remove_file, instance.file.name), using=using, robust=True)


def _remove_file(name: str) -> None:
    try:
        artifacts_storage().delete(name)
    except Exception:
        # Left over in the storage; the row is gone, so nobody can reach it any more.
        logger.exception(
            "artifact file not deleted",
            extra={"action": "artifact_file_delete_failed", "file": name},
        )
