from events.management.commands import approve
from events.operate import operations


class Command(approve.Command):
    help = (
        "Reject executions awaiting approval: they end `rejected` and never run. Others "
        "are left alone. --reason is required; audited."
    )
    verb = "reject"
    done = "rejected"

    def act(self, executions, *, actor, reason) -> int:
        return operations.reject(executions, actor=actor, via="cli", reason=reason)
