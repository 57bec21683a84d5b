"""The OpenAPI schema's shared pieces: error bodies, security schemes, status enums, the
operator API's and probes' bodies. The webhook endpoints' own are in
events/intake/openapi.py.

The schema is served at /api/schema/ by drf-spectacular and fuzzed by schemathesis in
tests/intake/test_openapi.py, so every body and status code described here is one the views
really return: a change to a view's answers is a change here too.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
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
    awaiting_approval = serializers.IntegerField(
        help_text="Executions waiting for an operator to approve or reject them."
    )
    oldest_awaiting_approval_seconds = serializers.FloatField(
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


# -- approval ---------------------------------------------------------------------------
# At most this many execution ids in one approve or reject call.
APPROVAL_MAX_IDS = 1000


class ApprovalParamsSerializer(serializers.Serializer):
    """POST /admin/executions/approve and /reject: which executions, and why."""

    ids = serializers.ListField(
        # A bigint primary key: larger numbers name no execution, and no database takes them.
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        min_length=1,
        max_length=APPROVAL_MAX_IDS,
        help_text=f"Execution ids (1 to {APPROVAL_MAX_IDS}); those not awaiting approval "
        "are left alone.",
    )
    reason = serializers.CharField(
        max_length=1000, help_text="Why; it goes in the audit log (not blank)."
    )


class ApprovalResultSerializer(serializers.Serializer):
    action = serializers.CharField(help_text="`approve` or `reject`.")
    requested = serializers.IntegerField(help_text="Distinct ids sent.")
    changed = serializers.IntegerField(
        help_text="How many were awaiting approval and are now queued (approve) or "
        "rejected (reject)."
    )
