from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operators' tools: the dashboard, /healthz and /metrics (no models of its own)."""

    name = "ops"
    verbose_name = "Operations"
