from guardrails.models import OperatorAction, Via


def record(*, actor, via: Via | str, action: str, target: str = "", reason: str = "", **details):
    """Append one entry to the audit log. `actor` is a user or a name."""
    name = getattr(actor, "get_username", None)
    return OperatorAction.objects.create(
        actor=name() if callable(name) else str(actor),
        via=via,
        action=action,
        target=target,
        reason=reason,
        details=details,
    )
