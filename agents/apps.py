from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Agents"

    def ready(self):
        # Like admin.py: every installed app's agent_functions.py registers its callables.
        from .functions import autodiscover

        autodiscover()
