from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GuardrailsConfig(AppConfig):
    name = "guardrails"
    verbose_name = "Guardrails"

    def ready(self):
        from guardrails.permissions import ensure_groups

        post_migrate.connect(ensure_groups, sender=self)
