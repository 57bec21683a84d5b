"""GET /admin/status: the operator status endpoint."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response

from events.observe import stats
from guardrails.views import CanViewStatus
from lib import openapi


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
