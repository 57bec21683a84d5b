"""The operator groups every installation has."""

from django.contrib.auth.models import Group, Permission

GROUPS = {
    # May flip the kill switch (and, later, replay, cancel, release).
    "operators": ("guardrails.change_kill_switch", "guardrails.view_runtimestate"),
    # Read only.
    "viewers": ("guardrails.view_runtimestate",),
}


def ensure_groups(**kwargs) -> None:
    """Create the operator groups with their permissions; safe to run again."""
    for name, perms in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                group.permissions.add(permission)
