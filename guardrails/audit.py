import getpass

from guardrails.models import OperatorAction, Via


def cli_actor() -> str:
    """Who runs a command, for the audit log: `cli:<OS user>` (`cli` where the OS cannot
    say, as in some containers). A command's --actor overrides it."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def actor_name(actor) -> str:
    """A user's username, or the name given (\"cli\", \"runaway-breaker\")."""
    return actor.get_username() if hasattr(actor, "get_username") else str(actor)


def record(*, actor, via: Via | str, action: str, target: str = "", reason: str = "", **details):
    """Append one entry to the audit log. `actor` is a user or a name."""
    return OperatorAction.objects.create(
        actor=actor_name(actor),
        via=via,
        action=action,
        target=target,
        reason=reason,
        details=details,
    )
