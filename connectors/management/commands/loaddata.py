"""Django's loaddata, with a clear error for a route the runtime could not read.

A route's sources and filter are checked on every save, raw saves included, so a fixture
holding a bad filter is refused (in one transaction: nothing of it is loaded). Django would
show that refusal as a traceback; this says which route and which part, and exits 1.
"""

from django.core.management import CommandError
from django.core.management.commands import loaddata

from connectors.models import InvalidRoute


class Command(loaddata.Command):
    def handle(self, *fixture_labels, **options):
        try:
            return super().handle(*fixture_labels, **options)
        except InvalidRoute as exc:
            raise CommandError(str(exc)) from None
