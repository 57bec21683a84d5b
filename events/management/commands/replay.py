from django.core.management.base import BaseCommand, CommandError

from events.models import Event, EventStatus, Execution, ExecutionStatus
from events.operate import operations, retention
from events.operate.selection import (
    EVENT_FILTERS,
    EXECUTION_FILTERS,
    add_filter_arguments,
    narrow,
)
from guardrails import audit

# Above this many executions, --progress auto shows progress even when not on a terminal.
PROGRESS_OVER = 1000
PRUNED_NOTE = "not replayed: their event was pruned (its payload is gone; docs/retention.md)"


class Progress:
    """Counts on stderr: a bar redrawn with \\r on a terminal, a line per batch otherwise."""

    def __init__(self, stream):
        self.stream = stream  # the command's OutputWrapper
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int):
        if self.tty:
            filled = 30 * done // max(total, 1)
            line = f"\rreplaying [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
            self.stream.write(line, style_func=str, ending="\n" if done >= total else "")
        else:
            self.stream.write(f"replaying: {done}/{total}", style_func=str)
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Run executions again with their idempotency keys: failed, cancelled, blocked and held "
        "ones (held ones are released); succeeded ones only with --force. With --unrouted, "
        "route unrouted events to the routes that match them now. Audited."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Execution ids.")
        parser.add_argument(
            "--status",
            choices=ExecutionStatus.values,
            help="Only executions in this status (for example failed or held).",
        )
        add_filter_arguments(parser)
        parser.add_argument("--force", action="store_true", help="Also re-run succeeded ones.")
        parser.add_argument(
            "--emit-again",
            action="store_true",
            help="A chained step emits a new follow-up event when it succeeds again "
            "(without it, it emits the one it did before: a duplicate, nothing new).",
        )
        parser.add_argument("--unrouted", action="store_true", help="Route unrouted events.")
        parser.add_argument(
            "--blocked",
            action="store_true",
            help="Route blocked events whose type is allowed now (the others stay blocked).",
        )
        parser.add_argument("--dry-run", action="store_true", help="List, change nothing.")
        parser.add_argument(
            "--progress",
            choices=["auto", "always", "never"],
            default="auto",
            help="Show progress on stderr: auto does on a terminal or above "
            f"{PROGRESS_OVER} executions (default: %(default)r).",
        )
        parser.add_argument("--reason", default="", help="Why; kept in the audit log.")
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(
        self,
        *args,
        ids,
        status,
        source,
        type,
        route,
        since,
        until,
        force,
        emit_again,
        unrouted,
        blocked,
        dry_run,
        progress,
        reason,
        actor,
        **options,
    ):
        chosen = {
            "ids": ids,
            "status": status,
            "source": source,
            "type": type,
            "route": route,
            "since": since,
            "until": until,
        }
        if unrouted or blocked:
            self._route_again(
                chosen, unrouted, blocked, dry_run=dry_run, actor=actor, reason=reason
            )
            return
        if not any(chosen.values()):
            raise CommandError("Say which executions: ids, or at least one filter.")
        executions = narrow(Execution.objects.all(), EXECUTION_FILTERS, chosen)
        eligible = operations.replayable_statuses(force=force)
        # Their payload is gone: operations.replay leaves them alone; say so.
        pruned = executions.filter(retention.stripped("event__"), status__in=eligible).count()
        if dry_run:
            self._list(executions, eligible)
        else:
            self._replay(
                executions,
                eligible,
                force,
                progress,
                actor=actor,
                reason=reason,
                emit_again=emit_again,
            )
        if pruned:
            self.stdout.write(f"{pruned} execution(s) {PRUNED_NOTE}.")

    def _route_again(self, chosen, unrouted, blocked, *, dry_run, actor, reason):
        """--unrouted / --blocked: route those events to the routes (or allowlist) of now."""
        wanted = [EventStatus.UNROUTED] * unrouted + [EventStatus.BLOCKED] * blocked
        events = narrow(Event.objects.filter(status__in=wanted), EVENT_FILTERS, chosen)
        pruned = events.filter(retention.stripped()).count()
        events = events.exclude(retention.stripped())
        if dry_run:
            self.stdout.write(f"{events.count()} event(s) would be routed.")
        else:
            n = operations.replay_events(events, actor=actor, via="cli", reason=reason)
            self.stdout.write(f"{n} execution(s) created.")
        if pruned:
            self.stdout.write(f"{pruned} event(s) {PRUNED_NOTE}.")

    def _list(self, executions, eligible):
        """--dry-run: one line per execution that would be replayed, then the totals."""
        total = 0
        for ex in (
            executions.filter(status__in=eligible)
            .exclude(retention.stripped("event__"))
            .select_related("event", "route")
            .order_by("pk")
            .iterator()
        ):
            total += 1
            self.stdout.write(
                f"{ex.pk}\t{ex.status}\t{ex.route.name}\t{ex.event.type}\t{ex.event.event_id}"
            )
        skipped = executions.exclude(status__in=eligible).count()
        self.stdout.write(f"{total} execution(s) would be replayed; {skipped} left alone.")

    def _replay(self, executions, eligible, force, progress, *, actor, reason, emit_again):
        bar = Progress(self.stderr)
        if progress == "auto":
            large = bar.tty or executions.filter(status__in=eligible).count() > PROGRESS_OVER
            progress = "always" if large else "never"
        n = operations.replay(
            executions,
            actor=actor,
            via="cli",
            force=force,
            reason=reason,
            progress=bar if progress == "always" else None,
            emit_again=emit_again,
        )
        self.stdout.write(f"{n} execution(s) queued again.")
