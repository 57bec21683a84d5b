"""Content negotiation for endpoints that always answer JSON."""

from rest_framework.negotiation import BaseContentNegotiation


class AlwaysJson(BaseContentNegotiation):
    """The view's first parser and renderer (JSON) whatever the Accept header says. Probes
    and senders send all sorts (Stripe sends application/xml among others), and a health
    check or a webhook must not fail with 406."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
