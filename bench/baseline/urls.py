import json

from django.db import connection
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

INSERT = (
    "INSERT INTO baseline_delivery (source, event_id, type, payload, received_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (source, event_id) DO NOTHING RETURNING id"
)


@csrf_exempt
@require_POST
def webhook(request):
    """Parse the JSON body and store it once: 202 when new, 200 when already stored."""
    try:
        body = json.loads(request.body)
        event_id, event_type = str(body["event_id"]), str(body["type"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"status": "error"}, status=400)
    with connection.cursor() as cursor:
        cursor.execute(
            INSERT, ["baseline", event_id, event_type, json.dumps(body), timezone.now()]
        )
        stored = cursor.fetchone() is not None
    if stored:
        return JsonResponse({"status": "accepted", "event_id": event_id}, status=202)
    return JsonResponse({"status": "duplicate", "event_id": event_id}, status=200)


urlpatterns = [path("webhook", webhook)]
