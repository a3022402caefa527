from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' tools: the dashboard, /healthz and /metrics, and the rollups they read."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        # Workers announce the queues they read (ops.presence): its signal handlers connect here.
        from . import presence  # noqa: F401
