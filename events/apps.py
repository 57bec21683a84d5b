from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events and executions"

    def ready(self):
        # Models can be imported only once the app registry is ready.
        from events.models import INTERNAL_SOURCE, Source
        from events.sources import catalog
        from guardrails import killswitch
        from guardrails.models import Scope

        catalog.connect()
        # Follow-up events are stored by intake; the engine, below it, is handed the way.
        from events.engine import chains
        from events.intake import ingest

        chains.connect(ingest.store_follow_up)
        # The internal source is known before its first follow-up event creates it, so
        # routes may listen to it and its kill switch may be engaged.
        killswitch.register_names(
            Scope.SOURCE,
            lambda: sorted({INTERNAL_SOURCE, *Source.objects.values_list("name", flat=True)}),
        )
