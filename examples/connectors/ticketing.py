"""An example connector: opens a ticket in an HTTP ticketing system.

Enable it with `CONNECTORS=examples.connectors.ticketing.TicketingConnector`, add the
ticketing host to OUTBOUND_HOSTS, then create a route with connector `ticketing`, action
`open` and parameters such as:

    {"url": "https://tickets.example.com/api/tickets",
     "title": "Payment failed for order {{ event.data.order.id }}",
     "priority": "high"}
"""

import json

from connectors import net
from connectors.base import Connector, PermanentError, Result


class TicketingConnector(Connector):
    name = "ticketing"
    description = "Open a ticket in the ticketing system."
    actions = {
        "open": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "title": {"type": "string", "minLength": 1, "maxLength": 200},
                "priority": {"enum": ["low", "normal", "high"]},
            },
            "required": ["url", "title"],
            "additionalProperties": False,
        }
    }

    def target(self, action, params):
        # One circuit breaker per ticketing host.
        return net.parse_target(params["url"])[1]

    def execute(self, action, params, context):
        body = {
            "title": params["title"],
            "priority": params.get("priority", "normal"),
            "source_event": context.event_id,
        }
        # net.request applies the outbound guardrails and raises RetryableError for
        # timeouts, 5xx and 429, PermanentError for other 4xx.
        response = net.request(
            "POST",
            params["url"],
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": context.idempotency_key,
            },
            body=json.dumps(body).encode(),
        )
        try:
            ticket = json.loads(response.body)["id"]
        except (ValueError, KeyError, TypeError):
            raise PermanentError("the ticketing system answered without a ticket id") from None
        return Result(summary={"ticket": ticket})

    def dry_run(self, action, params, context):
        return Result(summary={"dry_run": True, "would_open": params["title"]})
