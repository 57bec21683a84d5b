from django.contrib import admin
from django.urls import path
from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.views import SpectacularAPIView

from automation_runtime import views
from events.intake import views as event_views
from events.observe import metrics as event_metrics
from events.observe import views as status_views
from guardrails import views as guardrail_views

urlpatterns = [
    path("", views.home, name="home"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
    path("metrics", event_metrics.metrics, name="metrics"),
    path("webhook", event_views.WebhookView.as_view(), name="webhook"),
    path("webhook/", event_views.WebhookView.as_view()),
    path(
        "webhook/<slug:source>",
        event_views.SourceWebhookView.as_view(),
        name="source-webhook",
    ),
    # Operator JSON endpoints live beside the admin; they come first so the admin's
    # catch-all does not swallow them.
    path("admin/status", status_views.status, name="operator-status"),
    path("admin/kill_switch", guardrail_views.kill_switch, name="operator-kill-switch"),
    path("admin/executions/approve", status_views.approve, name="operator-approve"),
    path("admin/executions/reject", status_views.reject, name="operator-reject"),
    path("admin/", admin.site.urls),
    # JSON unless YAML is asked for (Accept: application/yaml or ?format=yaml).
    path(
        "api/schema/",
        SpectacularAPIView.as_view(
            renderer_classes=[
                OpenApiJsonRenderer2,
                OpenApiJsonRenderer,
                OpenApiYamlRenderer,
                OpenApiYamlRenderer2,
            ]
        ),
        name="openapi-schema",
    ),
    # The same schema to read and try, with Swagger UI's files served from here.
    path("api/docs/", views.ApiDocsView.as_view(url_name="openapi-schema"), name="api-docs"),
]

handler400 = "automation_runtime.views.bad_request"
handler403 = "automation_runtime.views.permission_denied"
handler404 = "automation_runtime.views.not_found"
handler500 = "automation_runtime.views.server_error"
