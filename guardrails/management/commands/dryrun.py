from django.core.management.base import BaseCommand, CommandError

from guardrails import audit
from guardrails.killswitch import ReasonRequired, set_dry_run
from guardrails.models import Via


class Command(BaseCommand):
    help = "Turn global dry run on or off: connectors describe what they would do. Audited."

    def add_arguments(self, parser):
        parser.add_argument("state", choices=["on", "off"])
        parser.add_argument("--reason", default="", help="Why (required).")
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(self, *args, state, reason, actor, **options):
        try:
            current, changed = set_dry_run(
                enabled=state == "on", actor=actor, reason=reason, via=Via.CLI
            )
        except (ReasonRequired, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"mode {current.mode}" + ("" if changed else " (unchanged)"))
