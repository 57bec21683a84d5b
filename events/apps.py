from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events and executions"

    def ready(self):
        from events import snapshot
        from events.models import Source
        from guardrails import killswitch
        from guardrails.models import Scope

        snapshot.connect()
        killswitch.register_names(
            Scope.SOURCE, lambda: Source.objects.values_list("name", flat=True)
        )
