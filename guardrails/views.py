import codecs
import json
import math

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import permissions, serializers
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser, get_encoding
from rest_framework.response import Response
from rest_framework.utils import json as drf_json

from guardrails.killswitch import (
    ReasonRequired,
    UnknownName,
    set_kill_switch,
    set_scoped_kill_switch,
)
from guardrails.models import Via
from guardrails.permissions import OPERATOR_PERMS, STATUS_VIEWER_PERMS, is_staff_with_any
from lib import openapi
from lib.errors import error_response


class StaffWithAnyPermission(permissions.BasePermission):
    """Active staff holding at least one of `perms`."""

    perms: tuple[str, ...] = ()

    def has_permission(self, request, view):
        return is_staff_with_any(request.user, self.perms)


class CanViewStatus(StaffWithAnyPermission):
    message = "You need permission to view the runtime status."
    perms = STATUS_VIEWER_PERMS


class CanChangeKillSwitch(StaffWithAnyPermission):
    message = "You need the kill switch permission."
    perms = ("guardrails.change_kill_switch",)


class CanOperate(StaffWithAnyPermission):
    message = "You need permission to operate executions."
    perms = OPERATOR_PERMS


class KillSwitchParams(serializers.Serializer):
    enabled = serializers.BooleanField()
    reason = serializers.CharField(max_length=1000, trim_whitespace=True)
    source = serializers.CharField(max_length=100, required=False)
    route = serializers.CharField(max_length=100, required=False)
    connector = serializers.CharField(max_length=100, required=False)
    allow_unknown = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        if sum(1 for key in ("source", "route", "connector") if attrs.get(key)) > 1:
            raise serializers.ValidationError(
                {"scope": "Name at most one of source, route, connector."}
            )
        return attrs


class NumberOutOfRange(ParseError):
    """A JSON number too large for a float: answered 400 `number_out_of_range`, as at ingest."""

    default_code = "number_out_of_range"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NumberOutOfRange(
            f"The number {text[:20]} is out of range: JSON numbers must fit a 64-bit float."
        )
    return value


class FiniteJSONParser(JSONParser):
    """DRF's JSON parser, but a number too large for a float (1e400) is refused instead
    of being read as infinity (and then as the text "inf")."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            return json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=drf_json.strict_constant,
                parse_float=_finite_float,
            )
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


_SCOPE_PARAMETERS = [
    OpenApiParameter(
        scope,
        {"type": "string", "minLength": 1, "maxLength": 100},
        description=f"Engage or release only the kill switch of this {scope} "
        "(name at most one of source, route, connector).",
    )
    for scope in ("source", "route", "connector")
]


@extend_schema(
    operation_id="operator_kill_switch",
    summary="Engage or release a kill switch",
    description=(
        "Engages (`enabled=true`) or releases (`enabled=false`) the global kill switch, or "
        "that of one source, route or connector, and records who did it and why in the "
        "audit log. Setting a switch to the state it has changes nothing (`changed: "
        "false`). A scoped switch is only engaged for a name that exists (a source, a "
        "route, or a connector some route uses) or that has a switch already, unless "
        "`allow_unknown=true`; releasing one that does not exist changes nothing and "
        "creates nothing. The parameters may also come in a JSON or form body; the query "
        "string wins where both name one."
    ),
    tags=["operator"],
    parameters=[
        OpenApiParameter("enabled", bool, required=True, description="Engage or release."),
        OpenApiParameter(
            "reason",
            {"type": "string", "minLength": 1, "maxLength": 1000, "pattern": r"\S"},
            required=True,
            description="Why; it goes in the audit log.",
        ),
        *_SCOPE_PARAMETERS,
        OpenApiParameter(
            "allow_unknown",
            bool,
            description="Engage the scoped switch even though no source, route or connector "
            "has that name (yet); without it such a name is refused with 400 `unknown_name`.",
        ),
        openapi.BEARER_CHALLENGE,
    ],
    request=dict.fromkeys(
        ("application/json", "application/x-www-form-urlencoded", "multipart/form-data"),
        openapi.KillSwitchParamsSerializer,
    ),
    responses={
        200: OpenApiResponse(
            PolymorphicProxySerializer(
                component_name="KillSwitchChange",
                serializers=[
                    openapi.KillSwitchResultSerializer,
                    openapi.ScopedKillSwitchResultSerializer,
                ],
                resource_type_field_name=None,
            ),
            description="The switch after the call: the global one, or the scoped one named.",
        ),
        **openapi.operator_errors(CanChangeKillSwitch.message, with_body=True),
        # A reason of 1,000 characters can take 12 kB in a query string.
        **openapi.URI_TOO_LONG,
    },
)
@api_view(["POST"])
@permission_classes([CanChangeKillSwitch])
@parser_classes([FiniteJSONParser, FormParser, MultiPartParser])
def kill_switch(request):
    """POST /admin/kill_switch?enabled=true|false&reason=...: engage or release, audited."""
    # Parameters may come in the query string (as documented) or in a JSON or form body.
    data = {}
    try:
        body = request.data
    except NumberOutOfRange as exc:
        return error_response(400, "number_out_of_range", str(exc.detail))
    if hasattr(body, "dict"):
        data.update(body.dict())
    elif isinstance(body, dict):
        data.update(body)
    data.update(request.query_params.dict())
    params = KillSwitchParams(data=data)
    if not params.is_valid():
        field, problems = next(iter(params.errors.items()))
        return error_response(400, f"invalid_{field}", f"{field}: {' '.join(map(str, problems))}")
    data = params.validated_data
    scope = next((key for key in ("source", "route", "connector") if data.get(key)), None)
    try:
        if scope:
            switch, changed = set_scoped_kill_switch(
                scope=scope,
                name=data[scope],
                engaged=data["enabled"],
                actor=request.user,
                reason=data["reason"],
                via=Via.API,
                allow_unknown=data["allow_unknown"],
            )
            return Response(
                {
                    "scope": scope,
                    "name": switch.name,
                    "engaged": switch.engaged,
                    "changed": changed,
                    "reason": switch.reason,
                    "changed_by": switch.changed_by,
                    # None for a switch never engaged: releasing it creates it unchanged.
                    "changed_at": switch.changed_at.isoformat() if switch.changed_at else None,
                }
            )
        state, changed = set_kill_switch(
            engaged=data["enabled"], actor=request.user, reason=data["reason"], via=Via.API
        )
    except ReasonRequired as exc:
        return error_response(400, "invalid_reason", str(exc))
    except UnknownName as exc:
        return error_response(
            400, "unknown_name", f"{exc} Send allow_unknown=true to engage it anyway."
        )
    return Response(
        {"mode": state.mode, "changed": changed, "kill_switch": state.kill_switch_json()}
    )
