"""The OpenAPI description of the webhook endpoints: their bodies, headers, answers and
the ready-made `extend_schema` decorators of POST /webhook and POST /webhook/{source}.

The shared pieces (error bodies, security schemes, status enums) are in lib/openapi.py.
"""

import unicodedata

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers

from lib.openapi import (
    ALLOW,
    API_KEY_SCHEME,
    CONFLICT_STATUSES,
    RETRY_AFTER,
    UNAUTHORIZED_MESSAGE,
    WEBHOOK_ACK_STATUSES,
    WWW_AUTHENTICATE,
    ErrorDetailSerializer,
    error,
)


class WebhookAckSerializer(serializers.Serializer):
    """The event was stored (202: accepted, held or blocked) or had been already (200:
    duplicate). Either way the sender's part is done; do not send it again."""

    status = serializers.ChoiceField(
        choices=WEBHOOK_ACK_STATUSES,
        help_text="`accepted`: stored and handed to its routes (also when no route matched). "
        "`held`: stored while a kill switch is engaged; runs when an operator releases it. "
        "`blocked`: stored, but a guardrail refused it. "
        "`duplicate`: this event id was already stored with the same body; nothing new.",
    )
    id = serializers.UUIDField(help_text="The runtime's id of the stored event.")
    event_id = serializers.CharField(help_text="The sender's event id.")


class WebhookConflictSerializer(serializers.Serializer):
    """The event id was already stored with a different body; nothing was stored."""

    status = serializers.ChoiceField(choices=CONFLICT_STATUSES)
    id = serializers.UUIDField(help_text="The runtime's id of the event stored first.")
    event_id = serializers.CharField()
    error = ErrorDetailSerializer()


class SlackChallengeSerializer(serializers.Serializer):
    """The answer to Slack's `url_verification` request: its challenge, echoed."""

    challenge = serializers.CharField()


# -- request bodies ---------------------------------------------------------------------
def _format_characters() -> str:
    """The format characters (Unicode category Cf) of the Basic Multilingual Plane, as
    regex ranges. Those beyond it (U+E0001 ...) need the `u` flag, which a JSON Schema
    pattern cannot ask for; the server refuses them all the same."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code)) == "Cf":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


# An identifier the runtime stores (events.intake.parsing.valid_identifier): at most 255 long,
# not blank, no leading or trailing whitespace, no control or format characters.
_UNSHOWN = r"\x00-\x1f\x7f-\x9f" + _format_characters()
_IDENTIFIER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": rf"^[^\s{_UNSHOWN}](?:[^{_UNSHOWN}]*[^\s{_UNSHOWN}])?$",
}

WEBHOOK_EVENT = {
    "type": "object",
    "description": "Any JSON object (at most 256 KiB by default, nested at most 64 deep). "
    "`type` routes it; `event_id` makes redeliveries safe.",
    "properties": {
        "event_id": {
            **_IDENTIFIER,
            "description": "The sender's id for this event; unique per source. "
            "Required unless the Idempotency-Key header carries it.",
        },
        "type": {**_IDENTIFIER, "description": "The event type, e.g. `order.created`."},
    },
    "required": ["type"],
    "additionalProperties": True,
}

SOURCE_EVENT = {
    "type": "object",
    "description": "The provider's JSON object, as it sends it. Its event id and type come "
    "from the provider's headers or from the JSON paths configured on the source.",
    "properties": {
        "event_id": {
            "type": "string",
            "description": "Where an `api_key` source's event id is read by default (else "
            "the Idempotency-Key header).",
        },
        "type": {
            "type": "string",
            "description": "Where an `api_key` source's event type is read by default.",
        },
    },
    "additionalProperties": True,
}

SOURCE_FORM = {
    "type": "object",
    "description": "How GitHub (content type `application/x-www-form-urlencoded`) and "
    "Slack's interactive payloads arrive: the JSON object in one `payload` field.",
    "properties": {
        "payload": {"type": "string", "description": "The event, as a JSON object."},
    },
    "required": ["payload"],
}

_JSON_TYPES = ("application/json", "application/*+json")


# -- responses --------------------------------------------------------------------------

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {**_IDENTIFIER},
    OpenApiParameter.HEADER,
    description="The event id, when the body has no `event_id` field.",
)


def _ingestion_errors() -> dict:
    return {
        400: error(
            "Not JSON, not an object, too deep, a number out of range, or no valid event id "
            "or type. Nothing was stored.",
            ("invalid_json", "The request body is not valid JSON: ..."),
            (
                "missing_event_id",
                "No event id: send an `event_id` field or an Idempotency-Key header.",
            ),
            (
                "invalid_event_id",
                "event_id contains the invisible format character U+202E, so it would "
                "display as something else.",
            ),
            (
                "number_out_of_range",
                "The number at data.total is out of range: JSON numbers must fit a 64-bit "
                "float (at most about 1.8e308).",
            ),
        ),
        401: error(
            "Missing or wrong credentials, or a bad or stale signature. The body is the same "
            "whatever failed. Nothing was stored.",
            ("unauthorized", UNAUTHORIZED_MESSAGE),
        ),
        405: error("Only POST is allowed.", ("method_not_allowed", 'Method "GET" not allowed.')),
        409: OpenApiResponse(
            WebhookConflictSerializer,
            description="This event id was already received with a different body; nothing "
            "was stored and the conflict was counted on the stored event.",
        ),
        413: error(
            "The body is over the limit (256 KiB by default); it was not read whole.",
            ("body_too_large", "The body is larger than 262144 bytes."),
        ),
        415: error(
            "The content type is not JSON (or not UTF-8), or the body is compressed (a "
            "Content-Encoding other than identity; checked before authentication).",
            ("unsupported_media_type", "Send the event as JSON: Content-Type: application/json."),
            (
                "unsupported_content_encoding",
                "Content-Encoding gzip is not supported: send the body uncompressed (no "
                "Content-Encoding, or identity).",
            ),
        ),
        503: error(
            "The database is unavailable; the event was not stored. Send it again later.",
            ("database_unavailable", "The event was not stored; try again."),
        ),
    }


_ACCEPTED = OpenApiResponse(
    WebhookAckSerializer,
    description="Stored: `accepted`, `held` (a kill switch is engaged) or `blocked` (a "
    "guardrail refused it; the reason is recorded).",
)
_DUPLICATE = OpenApiResponse(
    WebhookAckSerializer,
    description="`duplicate`: this event id was already stored with the same body; nothing "
    "new was stored and nothing runs again.",
)

WEBHOOK_SCHEMA = extend_schema(
    operation_id="webhook_create",
    summary="Send an event (API key)",
    description=(
        "Receives one event from a source that authenticates with an API key in the "
        "`X-API-Key` header; the key names the source. The event is stored once per "
        "(source, event id): a redelivery with the same body answers 200 `duplicate`, one "
        "with a different body 409 `conflict`, and neither runs anything again.\n\n"
        "The event id is the body's `event_id`, or else the `Idempotency-Key` header."
    ),
    tags=["ingestion"],
    auth=[{API_KEY_SCHEME: []}],
    parameters=[IDEMPOTENCY_KEY, WWW_AUTHENTICATE, RETRY_AFTER, ALLOW],
    request=dict.fromkeys(_JSON_TYPES, WEBHOOK_EVENT),
    responses={
        202: _ACCEPTED,
        200: _DUPLICATE,
        **_ingestion_errors(),
    },
    examples=[
        OpenApiExample(
            "order",
            value={"event_id": "evt_1", "type": "order.created", "order": {"id": 42}},
            request_only=True,
        ),
    ],
)
"""Put on `WebhookView.post`: POST /webhook."""


_SIGNATURE_HEADERS = [
    ("webhook-id", "Standard Webhooks: the message id (the event id)."),
    ("webhook-timestamp", "Standard Webhooks: seconds since the epoch, signed."),
    ("webhook-signature", "Standard Webhooks: `v1,<base64 HMAC-SHA256>`, space-separated."),
    ("svix-id", "Svix: the same as `webhook-id` (either set of three, not both disagreeing)."),
    ("svix-timestamp", "Svix: the same as `webhook-timestamp`."),
    ("svix-signature", "Svix: the same as `webhook-signature`."),
    ("X-Hub-Signature-256", "GitHub: `sha256=<hex HMAC-SHA256 of the body>`."),
    ("X-GitHub-Delivery", "GitHub: the delivery id (the event id)."),
    ("X-GitHub-Event", "GitHub: the event name (the event type)."),
    ("Stripe-Signature", "Stripe: `t=<timestamp>,v1=<hex HMAC-SHA256>`."),
    ("X-Shopify-Hmac-Sha256", "Shopify: base64 HMAC-SHA256 of the body."),
    ("X-Shopify-Event-Id", "Shopify: the event id, the same on every retry (the event id)."),
    ("X-Shopify-Webhook-Id", "Shopify: the delivery id (the event id when Event-Id is absent)."),
    ("X-Shopify-Topic", "Shopify: the topic (the event type)."),
    ("X-Slack-Signature", "Slack: `v0=<hex HMAC-SHA256>`."),
    ("X-Slack-Request-Timestamp", "Slack: seconds since the epoch, signed."),
]

SOURCE_WEBHOOK_SCHEMA = extend_schema(
    operation_id="webhook_source_create",
    summary="Send an event (named source)",
    description=(
        "Receives one event for the source named in the path, authenticated by that "
        "source's own scheme:\n\n"
        "- `api_key`: one of the source's API keys in its configured header "
        "(`X-API-Key` unless configured otherwise);\n"
        "- `standard_webhooks`: `webhook-id`, `webhook-timestamp` and `webhook-signature` "
        "(or Svix's `svix-id`, `svix-timestamp` and `svix-signature`);\n"
        "- `github`: `X-Hub-Signature-256`, with `X-GitHub-Delivery` and `X-GitHub-Event`;\n"
        "- `stripe`: `Stripe-Signature`;\n"
        "- `shopify`: `X-Shopify-Hmac-Sha256`, with `X-Shopify-Event-Id` (else "
        "`X-Shopify-Webhook-Id`) and `X-Shopify-Topic`;\n"
        "- `slack`: `X-Slack-Signature` and `X-Slack-Request-Timestamp`. Slack's "
        "`url_verification` request is answered with its challenge.\n\n"
        "Signatures are checked over the raw body, and timestamps must be recent. An unknown "
        "or disabled source, a missing or wrong key and a bad or stale signature all get "
        "the same 401, so a sender learns nothing about which sources exist.\n\n"
        "Duplicates and conflicts are answered as on `POST /webhook`. For GitHub and "
        "Shopify, whose signatures cover only the body, a body already received on the "
        "source under another event id is a replay: it is answered `duplicate` with the "
        "original event's ids, and nothing is stored or run."
    ),
    tags=["ingestion"],
    auth=[{API_KEY_SCHEME: []}, {}],
    parameters=[
        OpenApiParameter(
            "source",
            {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$", "maxLength": 100},
            OpenApiParameter.PATH,
            description="The source's name (a slug).",
        ),
        *[
            OpenApiParameter(
                name,
                {"type": "string", "maxLength": 1024},
                OpenApiParameter.HEADER,
                description=text,
            )
            for name, text in _SIGNATURE_HEADERS
        ],
        IDEMPOTENCY_KEY,
        WWW_AUTHENTICATE,
        RETRY_AFTER,
        ALLOW,
    ],
    request={
        **dict.fromkeys(_JSON_TYPES, SOURCE_EVENT),
        "application/x-www-form-urlencoded": OpenApiRequest(SOURCE_FORM),
    },
    responses={
        202: _ACCEPTED,
        200: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="SourceWebhookOk",
                serializers=[WebhookAckSerializer, SlackChallengeSerializer],
                resource_type_field_name=None,
            ),
            description="`duplicate` (see POST /webhook), or the challenge of Slack's "
            "`url_verification` request.",
        ),
        **_ingestion_errors(),
        404: error(
            "The path's source name is not a slug, so no endpoint has it. (A slug that names "
            "no source gets the 401.)",
            ("not_found", "No such endpoint."),
        ),
    },
)
"""Put on `SourceWebhookView.post`: POST /webhook/{source}."""
