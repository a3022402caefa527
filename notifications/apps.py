from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from executions.signals import execution_ended, execution_retrying

        from . import services

        # Inside the transaction that writes the execution's state: the deliveries and the
        # completion hook are recorded with it, and sent once it commits.
        execution_ended.connect(services.on_execution_ended, dispatch_uid="notifications.ended")
        execution_retrying.connect(
            services.on_execution_retrying, dispatch_uid="notifications.retrying"
        )
