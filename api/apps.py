from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = "API"

    def ready(self):
        # Settings fail loudly: a malformed rate stops the process at start-up.
        from django.conf import settings

        from .rates import parse_rate

        parse_rate(settings.CONVEYOR_API_RUN_RATE, setting="CONVEYOR_API_RUN_RATE")
        parse_rate(settings.CONVEYOR_WEBHOOK_RATE, setting="CONVEYOR_WEBHOOK_RATE")
