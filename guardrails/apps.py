from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GuardrailsConfig(AppConfig):
    name = "guardrails"
    verbose_name = "Guardrails"

    def ready(self):
        from guardrails.permissions import ensure_groups

        # After every app's migrations: the permissions named may belong to any app.
        post_migrate.connect(ensure_groups, dispatch_uid="guardrails.ensure_groups")

        from guardrails import config

        config.connect()
