"""The OpenAPI schema's shared pieces: response bodies, security schemes and the ready-made
`extend_schema` decorators of the ingestion endpoints.

The schema is served at /api/schema/ by drf-spectacular and fuzzed by schemathesis in
tests/test_openapi.py, so every body and status code described here is one the views
really return: a change to a view's answers is a change here too.
"""

import unicodedata

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers

# Values of the `status` field of each body. Their enum components are named in
# SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"], since several bodies share the field name.
ERROR_STATUSES = ["error"]
WEBHOOK_ACK_STATUSES = ["accepted", "held", "blocked", "duplicate"]
CONFLICT_STATUSES = ["conflict"]
HEALTH_STATUSES = ["ok"]
READINESS_STATUSES = ["ready", "not_ready"]

# Names of security schemes, not credentials.
API_KEY_SCHEME = "ApiKey"
OPERATOR_TOKEN_SCHEME = "OperatorToken"  # noqa: S105

UNAUTHORIZED_MESSAGE = "Missing or invalid credentials."


# -- bodies -----------------------------------------------------------------------------
class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="A stable identifier clients may branch on, e.g. `unauthorized`, "
        "`invalid_json`, `body_too_large`."
    )
    message = serializers.CharField(help_text="For people; may change without notice.")


class ErrorSerializer(serializers.Serializer):
    """Every error, from every endpoint. No stack traces, no secrets."""

    status = serializers.ChoiceField(choices=ERROR_STATUSES)
    error = ErrorDetailSerializer()


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
def error(description: str, *examples: tuple[str, str]) -> OpenApiResponse:
    """An error response: the error body, described, with (code, message) examples."""
    return OpenApiResponse(
        ErrorSerializer,
        description=description,
        examples=[
            OpenApiExample(
                code,
                value={"status": "error", "error": {"code": code, "message": message}},
                response_only=True,
            )
            for code, message in examples
        ],
    )


WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    str,
    OpenApiParameter.HEADER,
    description="The credential the endpoint expects.",
    required=True,
    response=[401],
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    description="Seconds to wait before sending the event again.",
    response=[503],
)
ALLOW = OpenApiParameter(
    "Allow", str, OpenApiParameter.HEADER, description="The methods allowed.", response=[405]
)
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


# -- operator API and probes -------------------------------------------------------------
class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=HEALTH_STATUSES)


class LiveWorkerSerializer(serializers.Serializer):
    id = serializers.CharField()
    last_seen_at = serializers.DateTimeField()


class ReadinessSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=READINESS_STATUSES)
    checks = serializers.DictField(
        child=serializers.CharField(),
        help_text="`database` and `migrations`: `ok`, or what is wrong (`unavailable`, "
        "`2 pending`).",
    )
    workers = LiveWorkerSerializer(
        many=True,
        required=False,
        help_text="Live workers, when ready. Reported, not required: a web server without "
        "workers still accepts events safely.",
    )


class KillSwitchStateSerializer(serializers.Serializer):
    engaged = serializers.BooleanField()
    changed_at = serializers.DateTimeField(allow_null=True)
    changed_by = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)


class WorkerSerializer(serializers.Serializer):
    id = serializers.CharField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    concurrency = serializers.IntegerField(help_text="Actions it runs at once.")
    in_flight = serializers.IntegerField(help_text="Actions it was running at its last heartbeat.")
    claims = serializers.IntegerField(help_text="Executions it has claimed since it started.")
    started_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    executions_run = serializers.IntegerField()


class RouteInFlightSerializer(serializers.Serializer):
    route = serializers.CharField()
    in_flight = serializers.IntegerField(help_text="Its executions running now, on all workers.")
    max_in_flight = serializers.IntegerField()


class CircuitSerializer(serializers.Serializer):
    route = serializers.CharField()
    connector = serializers.CharField()
    target = serializers.CharField()
    state = serializers.CharField()
    consecutive_failures = serializers.IntegerField()
    retry_at = serializers.DateTimeField(allow_null=True)


class GuardrailDecisionSerializer(serializers.Serializer):
    of = serializers.CharField(help_text="`event` or `execution`.")
    status = serializers.CharField(help_text="`held`, `blocked` or `retrying` (deferred).")
    reason = serializers.CharField()
    count = serializers.IntegerField()


class ScopedKillSwitchSummarySerializer(serializers.Serializer):
    scope = serializers.CharField()
    name = serializers.CharField()
    reason = serializers.CharField()
    changed_by = serializers.CharField()


class StatusReportSerializer(serializers.Serializer):
    """What an operator asks first; `manage.py status --json` prints the same."""

    mode = serializers.CharField(help_text="`running`, `killed` or `dry_run`.")
    kill_switch = KillSwitchStateSerializer()
    processed = serializers.IntegerField(help_text="Executions that succeeded.")
    events = serializers.DictField(
        child=serializers.IntegerField(), help_text="Events by status, every status present."
    )
    executions = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Executions by status, every status present.",
    )
    queue_depth = serializers.IntegerField(
        help_text="Executions a worker may claim now: queued, or retrying and due."
    )
    oldest_queued_seconds = serializers.FloatField(
        allow_null=True,
        help_text="How long the longest-waiting of those has waited; null when none.",
    )
    workers = WorkerSerializer(many=True, help_text="Live workers, newest heartbeat first.")
    in_flight_by_route = RouteInFlightSerializer(
        many=True, help_text="Routes with executions running now, by name."
    )
    circuits = CircuitSerializer(many=True, help_text="Circuit breakers that are not closed.")
    guardrail_decisions = GuardrailDecisionSerializer(
        many=True, help_text="Standing guardrail decisions, counted by reason."
    )
    scoped_kill_switches = ScopedKillSwitchSummarySerializer(
        many=True, help_text="Engaged kill switches of one source, route or connector."
    )


class KillSwitchParamsSerializer(serializers.Serializer):
    """The kill switch's parameters, when sent in a JSON or form body."""

    enabled = serializers.BooleanField(required=False)
    reason = serializers.CharField(max_length=1000, required=False)
    source = serializers.CharField(max_length=100, required=False)
    route = serializers.CharField(max_length=100, required=False)
    connector = serializers.CharField(max_length=100, required=False)
    allow_unknown = serializers.BooleanField(required=False)


class KillSwitchResultSerializer(serializers.Serializer):
    """The global kill switch after the call."""

    mode = serializers.CharField(help_text="`running`, `killed` or `dry_run`.")
    changed = serializers.BooleanField(help_text="False when it was already so.")
    kill_switch = KillSwitchStateSerializer()


class ScopedKillSwitchResultSerializer(serializers.Serializer):
    """The kill switch of one source, route or connector after the call."""

    scope = serializers.CharField(help_text="`source`, `route` or `connector`.")
    name = serializers.CharField()
    engaged = serializers.BooleanField()
    changed = serializers.BooleanField(help_text="False when it was already so.")
    reason = serializers.CharField(help_text="Empty for a switch never engaged.")
    changed_by = serializers.CharField(help_text="Empty for a switch never engaged.")
    changed_at = serializers.DateTimeField(
        allow_null=True, help_text="Null for a switch never engaged."
    )


# gunicorn answers this itself, in HTML, before the application sees the request.
URI_TOO_LONG = {
    (414, "text/html"): OpenApiResponse(
        OpenApiTypes.STR,
        description="The request line is over the server's limit (gunicorn: 4094 bytes). "
        "Send long parameters in the body instead.",
    )
}

BEARER_CHALLENGE = OpenApiParameter(
    "WWW-Authenticate",
    {"type": "string", "enum": ["Bearer"]},
    OpenApiParameter.HEADER,
    description="`Bearer`: send an operator token.",
    required=True,
    response=[401],
)


def operator_errors(permission_message: str, *, with_body: bool = False) -> dict:
    """The operator endpoints' error responses (400 and 415 only where a body is read)."""
    responses = {
        401: error(
            "No credential, or an unknown, revoked or malformed token.",
            ("not_authenticated", "Authentication credentials were not provided."),
            ("authentication_failed", "Invalid token."),
        ),
        403: error(
            "The user lacks the permission, is no longer active staff, or a session "
            "request came without its CSRF token.",
            ("permission_denied", permission_message),
        ),
        405: error("Method not allowed.", ("method_not_allowed", 'Method "GET" not allowed.')),
        503: error(
            "The database is unavailable.",
            ("database_unavailable", "The database is unavailable."),
        ),
    }
    if with_body:
        responses[400] = error(
            "A parameter is missing or invalid (the code names it), or the body is not "
            "valid JSON or form data. Nothing changed.",
            ("invalid_reason", "reason: This field is required."),
            ("invalid_enabled", "enabled: Must be a valid boolean."),
            ("invalid_scope", "scope: Name at most one of source, route, connector."),
            (
                "unknown_name",
                "No route is named 'to-lgo'; did you mean 'to-log'? Send allow_unknown=true "
                "to engage it anyway.",
            ),
            (
                "number_out_of_range",
                "The number 1e400 is out of range: JSON numbers must fit a 64-bit float.",
            ),
        )
        responses[415] = error(
            "The body is neither JSON nor form data.",
            ("unsupported_media_type", 'Unsupported media type "text/plain" in request.'),
        )
    return dict(sorted(responses.items()))


# -- authentication ---------------------------------------------------------------------
class OperatorTokenScheme(OpenApiAuthenticationExtension):
    """`guardrails.auth.OperatorTokenAuthentication` in the schema."""

    target_class = "guardrails.auth.OperatorTokenAuthentication"
    name = OPERATOR_TOKEN_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>`: an operator token "
            "(`manage.py` issues them; only their hash is stored).",
        }


# -- generator hooks --------------------------------------------------------------------
def drop_trailing_slash_aliases(endpoints):
    """Preprocessing hook: a path also routed with a trailing slash (`webhook/`) is one
    operation, listed once without the slash."""
    paths = {path for path, *_ in endpoints}
    return [
        (path, regex, method, callback)
        for path, regex, method, callback in endpoints
        if not (path.endswith("/") and path.rstrip("/") in paths)
    ]


def document_bad_requests(result, generator, request, public):
    """Postprocessing hook: Django refuses a request whose Host header the server does
    not answer to (ALLOWED_HOSTS) with a 400 before any view runs, so every operation can
    answer 400; list it where the operation has no 400 of its own."""
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses")
            if responses is None or "400" in responses:
                continue
            responses["400"] = {
                "description": "The request could not be understood, e.g. a Host header "
                "this server does not answer to.",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/Error"},
                        "examples": {
                            "BadRequest": {
                                "value": {
                                    "status": "error",
                                    "error": {
                                        "code": "bad_request",
                                        "message": "The request could not be understood.",
                                    },
                                }
                            }
                        },
                    }
                },
            }
            operation["responses"] = dict(sorted(responses.items()))
    return result
