from django.apps import AppConfig


class ArtifactsConfig(AppConfig):
    name = "artifacts"
    verbose_name = "Artifacts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from . import checks  # noqa: F401 (registers the storage check)
        from .models import Artifact
        from .services import on_artifact_deleted

        # However a row goes (artifacts_delete, an execution or agent deleted by cascade, the
        # admin), its file goes once the deletion commits.
        post_delete.connect(on_artifact_deleted, sender=Artifact, dispatch_uid="artifacts.file")
