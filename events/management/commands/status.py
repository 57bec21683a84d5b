import json

from django.core.management.base import BaseCommand

from events.stats import counts_by_status, workers_summary
from guardrails.models import RuntimeState


class Command(BaseCommand):
    help = "Show the mode, counts of events and executions by status, and the live workers."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON instead of a table."
        )

    def handle(self, *args, as_json: bool = False, **options):
        state = RuntimeState.current()
        counts = counts_by_status()
        workers = workers_summary()
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "mode": state.mode,
                        "kill_switch": {
                            "engaged": state.kill_switch_engaged,
                            "reason": state.reason or None,
                            "changed_by": state.changed_by or None,
                            "changed_at": state.changed_at.isoformat()
                            if state.changed_at
                            else None,
                        },
                        "processed": counts["executions"]["succeeded"],
                        **counts,
                        "workers": workers,
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(f"mode: {state.mode}" + (f" ({state.reason})" if state.reason else ""))
        for kind in ("events", "executions"):
            self.stdout.write(f"\n{kind}:")
            for name, n in counts[kind].items():
                self.stdout.write(f"  {name:<10} {n:>10}")
        self.stdout.write(f"\nlive workers: {len(workers)}")
        for w in workers:
            self.stdout.write(
                f"  {w['id']}  last seen {w['last_seen_at']}  ran {w['executions_run']}"
            )
