import json

from django.core.management.base import BaseCommand

from events import stats


class Command(BaseCommand):
    help = "Show the mode, counts of events and executions by status, and the live workers."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON instead of a table."
        )

    def handle(self, *args, as_json: bool = False, **options):
        report = stats.report()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        reason = report["kill_switch"]["reason"]
        self.stdout.write(f"mode: {report['mode']}" + (f" ({reason})" if reason else ""))
        for switch in report["scoped_kill_switches"]:
            self.stdout.write(f"kill switch engaged: {switch['scope']} {switch['name']}")
        for kind in ("events", "executions"):
            self.stdout.write(f"\n{kind}:")
            for name, n in report[kind].items():
                self.stdout.write(f"  {name:<10} {n:>10}")
        self.stdout.write(f"\nlive workers: {len(report['workers'])}")
        for w in report["workers"]:
            self.stdout.write(
                f"  {w['id']}  last seen {w['last_seen_at']}  ran {w['executions_run']}"
            )
        for circuit in report["circuits"]:
            self.stdout.write(
                f"circuit {circuit['state']}: {circuit['connector']} -> {circuit['target']}"
            )
