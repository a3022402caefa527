"""Artifacts: files an execution's agent saved (``ctx.save_artifact``, the http kind's "keep
the response"), each a row here and a file in the ``artifacts`` storage (settings.STORAGES).

The stored file is named ``<execution uuid>/<artifact uuid>``, never by the name the agent gave:
that name is only shown (and offered as the download's file name, cleaned for the header). A
row is written once its file is stored, so a row never points at a file that was never written;
a file whose row never committed (the worker killed in between) is left over in the storage.
Deleting a row removes its file once the deletion commits (``services.on_artifact_deleted``).
"""

import uuid

from django.core.files.storage import storages
from django.db import models
from django.utils import timezone

from executions.models import Execution


def artifacts_storage():
    """The ``artifacts`` storage as the settings configure it now. The services read and write
    through this, not through ``Artifact.file.storage`` (which Django fixes when the model is
    first loaded)."""
    return storages["artifacts"]


class Artifact(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="artifacts")
    # The attempt that saved it (a retried attempt's files stay).
    attempt = models.PositiveSmallIntegerField(default=0)
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    file = models.FileField(storage=artifacts_storage, max_length=300)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # Saving a name again replaces the file (services.artifact_save); this is the
            # backstop for two saves of one name at once.
            models.UniqueConstraint(
                fields=["execution", "name"], name="artifact_name_unique_per_execution"
            )
        ]

    def __str__(self):
        return self.name
