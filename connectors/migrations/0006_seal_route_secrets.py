"""Seal the secret parameters of existing routes (webhook_forward's `secret`, http's
credential headers), which were stored in plain before.

Which parameters are secret is the connectors' own rule (Connector.secret_params), so
this uses the current code rather than a frozen copy. Without a real SECRET_KEY it
changes nothing (a throwaway key would make the secrets unreadable); the worker still
runs plain secrets, and the next save of the route seals them.
"""

import sys

from django.db import migrations

from connectors import registry
from connectors.base import replace_sealed, unseal_secret, value_at
from lib import sealing


def _connector(name):
    try:
        return registry.get(name)
    except registry.UnknownConnector:
        return None


def seal_route_secrets(apps, schema_editor):
    Route = apps.get_model("connectors", "Route")
    for route in Route.objects.order_by("pk"):
        connector = _connector(route.connector)
        if connector is None:
            continue
        if not sealing.available():
            paths = connector.secret_params(route.action, route.params)
            if any(isinstance(value_at(route.params, path), str) for path in paths):
                sys.stderr.write(
                    "connectors: SECRET_KEY is not set, so the secret parameters of existing "
                    "routes stay in plain until each route is saved again.\n"
                )
                return
            continue
        sealed = connector.seal_secrets(route.action, route.params)
        if sealed != route.params:
            Route.objects.filter(pk=route.pk).update(params=sealed)


def unseal_route_secrets(apps, schema_editor):
    Route = apps.get_model("connectors", "Route")
    for route in Route.objects.order_by("pk"):
        plain = replace_sealed(route.params, lambda path, marker: unseal_secret(marker) or marker)
        if plain != route.params:
            Route.objects.filter(pk=route.pk).update(params=plain)


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0005_route_max_in_flight_circuit_per_route"),
    ]

    operations = [
        migrations.RunPython(seal_route_secrets, unseal_route_secrets),
    ]
