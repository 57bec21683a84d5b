from django.core.management.base import BaseCommand, CommandError

from guardrails import audit
from guardrails.killswitch import (
    ReasonRequired,
    UnknownName,
    check_known,
    set_kill_switch,
    set_scoped_kill_switch,
)
from guardrails.models import KillSwitch, RuntimeState, Scope, Via


class Command(BaseCommand):
    help = (
        "Engage (on) or release (off) the global kill switch, or the one of a source, route or "
        "connector; or show them all (status). Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("state", choices=["on", "off", "status"])
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--source", help="Only this source (its new events are held).")
        target.add_argument("--route", help="Only this route (its executions are held).")
        target.add_argument("--connector", help="Only this connector (its executions are held).")
        parser.add_argument("--reason", default="", help="Why (required for on and off).")
        parser.add_argument(
            "--allow-unknown",
            action="store_true",
            help="Engage a scoped kill switch even though no source, route or connector "
            "has that name (yet). Without it a name that is not known is refused (exit 2).",
        )
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(
        self, *args, state, source, route, connector, reason, actor, allow_unknown, **options
    ):
        scoped = [
            (s, n)
            for s, n in (
                (Scope.SOURCE, source),
                (Scope.ROUTE, route),
                (Scope.CONNECTOR, connector),
            )
            if n
        ]
        if state == "status":
            self._show()
            return
        try:
            if scoped:
                ((scope, name),) = scoped
                _, changed = set_scoped_kill_switch(
                    scope=scope,
                    name=name,
                    engaged=state == "on",
                    actor=actor,
                    reason=reason,
                    via=Via.CLI,
                    allow_unknown=allow_unknown,
                )
            else:
                _, changed = set_kill_switch(
                    engaged=state == "on", actor=actor, reason=reason, via=Via.CLI
                )
        except ReasonRequired as exc:
            raise CommandError(str(exc)) from None
        except UnknownName as exc:
            raise CommandError(
                f"{exc} Pass --allow-unknown to engage it anyway.", returncode=2
            ) from None
        if not changed:
            self.stdout.write("The kill switch was already in that state.")
            if scoped:
                self._warn_if_unknown(*scoped[0])
        self._show()

    def _warn_if_unknown(self, scope, name):
        # Releasing a name that is not known is allowed (it never hurts), but it is most
        # likely a typo that left the intended switch engaged.
        try:
            check_known(scope, name)
        except UnknownName as exc:
            self.stderr.write(f"Nothing was released: {exc}")

    def _show(self):
        current = RuntimeState.current()
        engaged = "engaged" if current.kill_switch_engaged else "released"
        by = (
            f" by {current.changed_by} at {current.changed_at:%Y-%m-%d %H:%M:%S}"
            if current.changed_at
            else ""
        )
        why = f": {current.reason}" if current.reason else ""
        self.stdout.write(f"mode {current.mode}; kill switch {engaged}{by}{why}")
        for switch in KillSwitch.objects.engaged():
            self.stdout.write(
                f"kill switch engaged for {switch.scope} {switch.name} "
                f"by {switch.changed_by}: {switch.reason}"
            )
