from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    verbose_name = "Executions"

    def ready(self):
        # Every Postgres connection reads timestamps through the compiled ISO parser.
        from common.timestamps import install

        install()
