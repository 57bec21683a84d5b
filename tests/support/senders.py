"""Sources made as `manage.py source create` makes them, and deliveries shaped and signed
the way each provider sends them."""

import json
import uuid

from events.sources import credentials
from lib import signatures


def create(scheme, name=None, secret=None, **rules):
    """A source made the way `manage.py source create` makes it; returns (source, secret)."""
    if secret is None and scheme in signatures.PROVIDER_ISSUED:
        secret = signatures.generate_secret(scheme)
    return credentials.create_source(
        name=name or scheme.replace("_", "-"),
        scheme=scheme,
        secret=secret,
        actor="tests",
        via="cli",
        **rules,
    )


def delivery(scheme, event_id="evt_1", event_type="order.created", **extra):
    """(body bytes, unsigned headers) the way this provider shapes a delivery. Two events
    of GitHub or Shopify differ in their bodies too (those schemes sign the body alone, so
    the same bytes under another id are a replay)."""
    headers = {}
    if scheme == "standard_webhooks":
        payload = {"type": event_type, "data": {"order": 1, **extra}}
    elif scheme == "github":
        payload = {"action": "created", "order": 1, "for": event_id, **extra}
        headers = {"X-GitHub-Delivery": event_id, "X-GitHub-Event": event_type}
    elif scheme == "stripe":
        payload = {"id": event_id, "object": "event", "type": event_type, "order": 1, **extra}
    elif scheme == "shopify":
        payload = {"id": 1, "order": 1, "for": event_id, **extra}
        headers = {
            "X-Shopify-Event-Id": event_id,
            "X-Shopify-Webhook-Id": f"wh-{uuid.uuid4()}",  # new on each retry
            "X-Shopify-Topic": event_type,
        }
    elif scheme == "slack":
        payload = {
            "type": "event_callback",
            "event_id": event_id,
            "event": {"type": event_type, "order": 1, **extra},
        }
    else:
        payload = {"event_id": event_id, "type": event_type, **extra}
    return json.dumps(payload).encode(), headers


def signed(scheme, secret, body, headers, *, event_id="evt_1", timestamp=None):
    msg_id = event_id if scheme == "standard_webhooks" else None
    return {
        **headers,
        **signatures.sign(scheme, secret, body, timestamp=timestamp, msg_id=msg_id),
    }


def send(client, name, body, headers, content_type="application/json"):
    return client.post(f"/webhook/{name}", data=body, content_type=content_type, headers=headers)
