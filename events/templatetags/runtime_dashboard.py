"""`{% runtime_dashboard %}`: the status dashboard on the admin index, for those who may
view the runtime status (the same rule as GET /admin/status)."""

from django import template

from events import dashboard

register = template.Library()

VIEW_PERMS = ("guardrails.view_runtimestate", "guardrails.change_kill_switch")


def can_view_status(user) -> bool:
    """Active staff holding a permission to view the runtime status."""
    return bool(
        user
        and user.is_active
        and user.is_staff
        and any(user.has_perm(perm) for perm in VIEW_PERMS)
    )


def _rows(counts: dict, kind: str) -> list[dict]:
    return [
        {"status": status, "h1": n, "h24": counts["24h"][kind][status]}
        for status, n in counts["1h"][kind].items()
    ]


@register.inclusion_tag("admin/runtime_dashboard.html", takes_context=True)
def runtime_dashboard(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if not can_view_status(user):
        return {"show": False}
    data = dashboard.snapshot()
    return {
        "show": True,
        "can_change_kill_switch": user.has_perm("guardrails.change_kill_switch"),
        "execution_rows": _rows(data["counts"], "executions"),
        "event_rows": _rows(data["counts"], "events"),
        **data,
    }
