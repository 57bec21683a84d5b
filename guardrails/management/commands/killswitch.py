from django.core.management.base import BaseCommand, CommandError

from guardrails.killswitch import ReasonRequired, set_kill_switch
from guardrails.models import RuntimeState, Via


class Command(BaseCommand):
    help = "Engage (on) or release (off) the kill switch, or show it (status). Audited."

    def add_arguments(self, parser):
        parser.add_argument("state", choices=["on", "off", "status"])
        parser.add_argument("--reason", default="", help="Why (required for on and off).")
        parser.add_argument(
            "--actor", default="cli", help="Who, for the audit log (default: %(default)r)."
        )

    def handle(self, *args, state, reason, actor, **options):
        if state == "status":
            current = RuntimeState.current()
        else:
            try:
                current, changed = set_kill_switch(
                    engaged=state == "on", actor=actor, reason=reason, via=Via.CLI
                )
            except ReasonRequired as exc:
                raise CommandError(str(exc)) from None
            if not changed:
                self.stdout.write("The kill switch was already in that state.")
        engaged = "engaged" if current.kill_switch_engaged else "released"
        by = (
            f" by {current.changed_by} at {current.changed_at:%Y-%m-%d %H:%M:%S}"
            if current.changed_at
            else ""
        )
        why = f": {current.reason}" if current.reason else ""
        self.stdout.write(f"mode {current.mode}; kill switch {engaged}{by}{why}")
