from django.core.management.base import BaseCommand, CommandError

from events.models import Execution
from events.operate import operations
from events.operate.selection import EXECUTION_FILTERS, add_filter_arguments, narrow
from guardrails import audit
from guardrails.killswitch import ReasonRequired


class Command(BaseCommand):
    help = (
        "Approve executions awaiting approval: they are queued and run through the normal "
        "path (guardrails, the kill switch included, are checked when a worker claims "
        "them). Others are left alone. --reason is required; audited."
    )
    verb = "approve"
    done = "approved"

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Execution ids.")
        add_filter_arguments(parser)
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")
        parser.add_argument("--reason", required=True, help="Why; kept in the audit log.")
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(self, *args, ids, dry_run, reason, actor, **options):
        chosen = {
            "ids": ids,
            **{k: options[k] for k in ("source", "type", "route", "since", "until")},
        }
        if not any(chosen.values()):
            raise CommandError("Say which executions: ids, or at least one filter.")
        try:
            reason = operations.required_reason(reason)
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        executions = narrow(Execution.objects.all(), EXECUTION_FILTERS, chosen)
        waiting = executions.awaiting_approval()
        if dry_run:
            self.stdout.write(f"{waiting.count()} execution(s) would be {self.done}.")
            return
        n = self.act(executions, actor=actor, reason=reason)
        self.stdout.write(f"{n} execution(s) {self.done}.")

    def act(self, executions, *, actor, reason) -> int:
        return operations.approve(executions, actor=actor, via="cli", reason=reason)
