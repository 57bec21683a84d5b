"""The operator groups every installation has, kept in step after each `migrate`."""

from django.contrib.auth.models import Group, Permission

_VIEW = (
    "events.view_source",
    "events.view_event",
    "events.view_execution",
    "events.view_attempt",
    "events.view_workerheartbeat",
    "connectors.view_route",
    "connectors.view_circuitbreaker",
    "guardrails.view_runtimestate",
    "guardrails.view_operatoraction",
    "guardrails.view_killswitch",
    "guardrails.view_allowedeventtype",
    "guardrails.view_ratelimit",
    "guardrails.view_payloadschema",
    "guardrails.view_allowedhost",
    "guardrails.view_allowedcallable",
    "guardrails.view_allowedaction",
)

# Who may see the runtime's status: GET /admin/status, /metrics and the admin dashboard.
STATUS_VIEWER_PERMS = ("guardrails.view_runtimestate", "guardrails.change_kill_switch")


def is_staff_with_any(user, perms) -> bool:
    """Active staff holding at least one of `perms`."""
    return bool(
        user and user.is_active and user.is_staff and any(user.has_perm(perm) for perm in perms)
    )


def may_view_status(user) -> bool:
    return is_staff_with_any(user, STATUS_VIEWER_PERMS)


# Who may operate the runtime from the admin: release, replay and cancel executions, route
# events again, close circuit breakers. The operators group holds both; a viewer neither.
OPERATOR_PERMS = ("guardrails.change_kill_switch", "events.change_execution")


def may_operate(user) -> bool:
    """Active staff who may act on executions, events and circuits, not only read them."""
    return is_staff_with_any(user, OPERATOR_PERMS)


GROUPS = {
    # May flip the kill switch, release, replay and cancel executions, and see everything.
    "operators": (*_VIEW, "guardrails.change_kill_switch", "events.change_execution"),
    # Read only.
    "viewers": _VIEW,
}


def ensure_groups(**kwargs) -> None:
    """Create the operator groups with their permissions; safe to run again."""
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                wanted.append(permission)
        group.permissions.add(*wanted)
