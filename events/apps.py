from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events and executions"

    def ready(self):
        from events import snapshot

        snapshot.connect()
