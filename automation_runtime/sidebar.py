"""The admin's sidebar (UNFOLD["SIDEBAR"]["navigation"]): the dashboard, then the apps and
models the stock admin index listed, grouped and permitted the same way, with icons."""

from django.contrib import admin
from django.urls import reverse

# Material Symbols names (unfold ships the font); a model missing here gets none.
ICONS = {
    "events.event": "inbox",
    "events.execution": "play_circle",
    "events.attempt": "history",
    "events.bulkoperation": "stacks",
    "events.source": "key",
    "events.rejectedrequest": "block",
    "events.workerheartbeat": "monitor_heart",
    "connectors.route": "alt_route",
    "connectors.circuitbreaker": "electrical_services",
    "guardrails.runtimestate": "power_settings_new",
    "guardrails.killswitch": "toggle_off",
    "guardrails.operatoraction": "receipt_long",
    "guardrails.operatortoken": "token",
    "guardrails.allowedeventtype": "rule",
    "guardrails.allowedhost": "dns",
    "guardrails.allowedcallable": "function",
    "guardrails.allowedaction": "checklist",
    "guardrails.payloadschema": "schema",
    "guardrails.ratelimit": "speed",
    "auth.user": "person",
    "auth.group": "group",
}


def navigation(request) -> list[dict]:
    """Sidebar groups for this user: Django's own app list (so a model shows exactly when
    its list would open), after a link to the dashboard."""
    groups = [
        {
            "title": "Runtime",
            "items": [
                {"title": "Dashboard", "icon": "dashboard", "link": reverse("admin:index")},
            ],
        }
    ]
    for app in admin.site.get_app_list(request):
        items = [
            {
                "title": model["name"],
                "icon": ICONS.get(f"{app['app_label']}.{model['object_name'].lower()}"),
                "link": model["admin_url"],
            }
            for model in app["models"]
            if model.get("admin_url")
        ]
        if items:
            groups.append({"title": app["name"], "separator": True, "items": items})
    return groups
