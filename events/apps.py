from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events and executions"

    def ready(self):
        # Models can be imported only once the app registry is ready.
        from events.models import Source
        from events.sources import catalog
        from guardrails import killswitch
        from guardrails.models import Scope

        catalog.connect()
        killswitch.register_names(
            Scope.SOURCE, lambda: Source.objects.values_list("name", flat=True)
        )
