import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from events.operate import retention
from guardrails import audit

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def age(value: str) -> datetime.timedelta:
    """An age such as 36h, 30d or 2w."""
    if len(value) < 2 or value[-1] not in UNITS or not value[:-1].isdigit():
        raise ValueError(f"not an age like 30d, 12h or 2w: {value!r}")
    return datetime.timedelta(seconds=int(value[:-1]) * UNITS[value[-1]])


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


def _days(delta: datetime.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:g} day(s)"


class Command(BaseCommand):
    help = (
        "Delete old history of finished events in short batches. Older than --older-than: "
        "attempts, payloads and headers go, the event id stays so a redelivery is still a "
        "duplicate. Older than the dedup window (--keep-ids-for) too: the event and its "
        "executions go. Events with work left (queued, running, retrying, held) are never "
        "touched. Audited. See docs/retention.md."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=age,
            required=True,
            help="Prune finished events received longer ago than this (e.g. 30d).",
        )
        parser.add_argument(
            "--keep-ids-for",
            type=age,
            default=None,
            help="Keep event ids (duplicate detection) this long; default: "
            f"DEDUP_RETENTION_DAYS ({settings.DEDUP_RETENTION_DAYS}d).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=1000,
            help="Events per transaction (default: %(default)r).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, change nothing.")
        parser.add_argument("--reason", default="", help="Why; kept in the audit log.")
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(self, *args, older_than, keep_ids_for, batch_size, dry_run, reason, actor, **opts):
        keep = retention.dedup_window() if keep_ids_for is None else keep_ids_for
        self.stdout.write(
            f"Stripping finished events older than {_days(older_than)}; deleting those "
            f"older than {_days(max(older_than, keep))} (event ids kept {_days(keep)})."
        )

        def progress(stage, number, result):
            if stage == "forget":
                self.stdout.write(
                    f"  delete batch {number}: {result.events_deleted} event(s), "
                    f"{result.executions_deleted} execution(s) deleted so far"
                )
            elif stage == "strip":
                self.stdout.write(
                    f"  strip batch {number}: {result.events_stripped} event(s) stripped, "
                    f"{result.attempts_deleted} attempt(s) deleted so far"
                )
            else:
                self.stdout.write(
                    f"  rejected-request batch {number}: {result.rejected_deleted} row(s) so far"
                )

        try:
            result = retention.prune(
                older_than=older_than,
                keep_ids_for=keep,
                batch_size=batch_size,
                dry_run=dry_run,
                actor=actor,
                reason=reason,
                progress=progress,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        verb = "would be" if dry_run else "were"
        self.stdout.write(
            f"{result.events_deleted} event(s) with {result.executions_deleted} execution(s) "
            f"{verb} deleted; {result.events_stripped} event(s) {verb} stripped of payload, "
            f"headers and attempts; {result.attempts_deleted} attempt(s) and "
            f"{result.rejected_deleted} rejected-request row(s) {verb} deleted."
        )
        if not dry_run:
            self.stdout.write(
                "Batches: "
                + ", ".join(f"{stage} {n}" for stage, n in result.batches.items())
                + "."
            )
