"""The operator JSON endpoints of the events app: GET /admin/status, and
POST /admin/executions/approve and /reject."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.response import Response

from events.models import Execution
from events.observe import stats
from events.operate import operations
from guardrails.killswitch import ReasonRequired
from guardrails.models import Via
from guardrails.views import CanOperate, CanViewStatus, FiniteJSONParser, NumberOutOfRange
from lib import openapi
from lib.errors import error_response


@extend_schema(
    operation_id="operator_status",
    summary="Runtime status",
    tags=["operator"],
    parameters=[openapi.BEARER_CHALLENGE],
    responses={
        200: OpenApiResponse(
            openapi.StatusReportSerializer,
            description="Mode and kill switches, counts, workers, circuits, decisions.",
        ),
        **openapi.operator_errors(CanViewStatus.message),
    },
)
@api_view(["GET"])
@permission_classes([CanViewStatus])
def status(request):
    """GET /admin/status: mode, kill switches, processed count, counts by status, workers,
    open circuits and standing guardrail decisions."""
    return Response(stats.report())


def _approval_schema(action: str, does: str):
    return extend_schema(
        operation_id=f"operator_executions_{action}",
        summary=f"{action.capitalize()} executions awaiting approval",
        description=f"{does} Executions not awaiting approval are left alone (`changed` "
        "counts those changed). Audited with the reason and the operator's name.",
        tags=["operator"],
        parameters=[openapi.BEARER_CHALLENGE],
        request={"application/json": openapi.ApprovalParamsSerializer},
        responses={
            200: OpenApiResponse(openapi.ApprovalResultSerializer, description="What changed."),
            **openapi.operator_errors(CanOperate.message),
            400: openapi.error(
                "The body is not valid JSON, or `ids` or `reason` is missing or invalid "
                "(the code names it). Nothing changed.",
                ("invalid_reason", "reason: This field may not be blank."),
                ("invalid_ids", "ids: This field is required."),
                ("invalid_body", "The body must be a JSON object."),
            ),
            415: openapi.error(
                "The body is not JSON.",
                ("unsupported_media_type", 'Unsupported media type "text/plain" in request.'),
            ),
        },
    )


def _approval(request, action: str):
    try:
        body = request.data
    except NumberOutOfRange as exc:
        return error_response(400, "number_out_of_range", str(exc.detail))
    if not isinstance(body, dict):
        return error_response(400, "invalid_body", "The body must be a JSON object.")
    params = openapi.ApprovalParamsSerializer(data=body)
    if not params.is_valid():
        field, problems = next(iter(params.errors.items()))
        if isinstance(problems, dict):  # one of the ids: {index: [problems]}
            problems = [f"item {i}: {' '.join(map(str, p))}" for i, p in problems.items()]
        return error_response(400, f"invalid_{field}", f"{field}: {' '.join(map(str, problems))}")
    ids = sorted(set(params.validated_data["ids"]))
    rule = operations.approve if action == "approve" else operations.reject
    try:
        changed = rule(
            Execution.objects.filter(pk__in=ids),
            actor=request.user,
            via=Via.API,
            reason=params.validated_data["reason"],
        )
    except ReasonRequired as exc:
        return error_response(400, "invalid_reason", str(exc))
    return Response({"action": action, "requested": len(ids), "changed": changed})


@_approval_schema(
    "approve", "Queues them to run now; guardrails, the kill switch included, still apply."
)
@api_view(["POST"])
@permission_classes([CanOperate])
@parser_classes([FiniteJSONParser])
def approve(request):
    """POST /admin/executions/approve {"ids": [...], "reason": "..."}: audited."""
    return _approval(request, "approve")


@_approval_schema("reject", "Ends them `rejected`: they never run.")
@api_view(["POST"])
@permission_classes([CanOperate])
@parser_classes([FiniteJSONParser])
def reject(request):
    """POST /admin/executions/reject {"ids": [...], "reason": "..."}: audited."""
    return _approval(request, "reject")
