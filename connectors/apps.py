from django.apps import AppConfig


class ConnectorsConfig(AppConfig):
    name = "connectors"
    verbose_name = "Connectors and routes"

    def ready(self):
        # Models can be imported only once the app registry is ready.
        from connectors.models import Route
        from guardrails import killswitch
        from guardrails.models import Scope

        killswitch.register_names(
            Scope.ROUTE, lambda: Route.objects.values_list("name", flat=True)
        )
        killswitch.register_names(
            Scope.CONNECTOR, lambda: Route.objects.values_list("connector", flat=True)
        )
