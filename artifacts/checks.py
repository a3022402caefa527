"""``manage.py check`` (and every process Django starts with checks) says when the artifacts
storage that the settings name cannot be set up, rather than the first save failing."""

from django.core.checks import Error, register
from django.core.files.storage import InvalidStorageError, storages


@register()
def artifacts_storage_check(app_configs, **kwargs):
    try:
        storages["artifacts"]
    except (InvalidStorageError, ImportError, TypeError, ValueError) as exc:
        return [
            Error(
                f"The artifacts storage cannot be set up: {exc}",
                hint="Check CONVEYOR_ARTIFACTS_STORAGE and CONVEYOR_ARTIFACTS_STORAGE_OPTIONS "
                "(README, Artifacts).",
                id="artifacts.E001",
            )
        ]
    return []
