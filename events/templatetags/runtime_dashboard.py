"""`{% runtime_dashboard %}`: the status dashboard on the admin index, for those who may
view the runtime status (the same rule as GET /admin/status)."""

from django import template

from events.observe import dashboard
from guardrails.permissions import may_operate, may_view_status

register = template.Library()


def _rows(counts: dict, kind: str) -> list[dict]:
    return [
        {"status": status, "h1": n, "h24": counts["24h"][kind][status]}
        for status, n in counts["1h"][kind].items()
    ]


@register.simple_tag(takes_context=True, name="may_view_status")
def may_view_status_tag(context) -> bool:
    """Whether the page's user may see the dashboard."""
    request = context.get("request")
    return may_view_status(getattr(request, "user", None))


@register.inclusion_tag("admin/runtime_dashboard.html", takes_context=True)
def runtime_dashboard(context):
    request = context.get("request")
    user = getattr(request, "user", None)
    if not may_view_status(user):
        return {"show": False}
    data = dashboard.overview()
    return {
        "show": True,
        "can_change_kill_switch": user.has_perm("guardrails.change_kill_switch"),
        "can_operate": may_operate(user),
        "execution_rows": _rows(data["counts"], "executions"),
        "event_rows": _rows(data["counts"], "events"),
        **data,
    }
