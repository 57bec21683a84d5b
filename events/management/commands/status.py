import json

from django.core.management.base import BaseCommand

from events.observe import stats


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none queued"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _table(rows: list[tuple], headers: tuple) -> list[str]:
    """Left-aligned columns, numbers right-aligned, with a rule under the headers."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(isinstance(r[i], int) or r[i] == "-" for r in rows)
        for i in range(len(headers))
    ]

    def line(row):
        return "  ".join(
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    return [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]


class Command(BaseCommand):
    help = (
        "Show the mode and kill switches, events and executions by status, the oldest "
        "queued execution, live workers, open circuits and standing guardrail decisions."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON instead of a table."
        )

    def handle(self, *args, as_json: bool = False, **options):
        report = stats.report()
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        sections = (_mode, _counts, _workers, _in_flight, _circuits, _decisions)
        self.stdout.write("\n".join(line for section in sections for line in section(report)))


def _mode(report) -> list[str]:
    """The mode and the kill switches: what an operator looks for first."""
    switch = report["kill_switch"]
    out = [f"mode:          {report['mode']}"]
    if switch["engaged"]:
        out.append(
            f"kill switch:   ENGAGED by {switch['changed_by'] or '?'} at "
            f"{switch['changed_at']}: {switch['reason'] or '(no reason)'}"
        )
    else:
        out.append("kill switch:   released")
    out.append(f"processed:     {report['processed']} execution(s) succeeded")
    out.append(f"oldest queued: {_age(report['oldest_queued_seconds'])}")
    if report["awaiting_approval"]:
        out.append(
            f"awaiting approval: {report['awaiting_approval']} execution(s), the oldest for "
            f"{_age(report['oldest_awaiting_approval_seconds'])}"
        )
    if report["scoped_kill_switches"]:
        out += ["", "scoped kill switches engaged:"]
        out += _table(
            [
                (k["scope"], k["name"], k["changed_by"] or "", k["reason"])
                for k in report["scoped_kill_switches"]
            ],
            ("scope", "name", "by", "reason"),
        )
    return out


def _counts(report) -> list[str]:
    statuses = list(dict.fromkeys([*report["events"], *report["executions"]]))
    rows = [(s, report["events"].get(s, "-"), report["executions"].get(s, "-")) for s in statuses]
    return ["", *_table(rows, ("status", "events", "executions"))]


def _workers(report) -> list[str]:
    out = ["", f"live workers: {len(report['workers'])}"]
    if report["workers"]:
        out += _table(
            [
                (
                    w["id"],
                    w["hostname"],
                    w["pid"],
                    f"{w['in_flight']}/{w['concurrency']}",
                    w["claims"],
                    w["executions_run"],
                    w["last_seen_at"],
                )
                for w in report["workers"]
            ],
            ("worker", "host", "pid", "in flight", "claimed", "ran", "last seen"),
        )
    return out


def _in_flight(report) -> list[str]:
    if not report["in_flight_by_route"]:
        return []
    rows = [(r["route"], r["in_flight"], r["max_in_flight"]) for r in report["in_flight_by_route"]]
    return ["", "in flight by route:", *_table(rows, ("route", "in flight", "max in flight"))]


def _circuits(report) -> list[str]:
    out = ["", f"open circuits: {len(report['circuits'])}"]
    if report["circuits"]:
        out += _table(
            [
                (c["route"], c["target"], c["state"], c["consecutive_failures"])
                for c in report["circuits"]
            ],
            ("route", "target", "state", "failures"),
        )
    return out


def _decisions(report) -> list[str]:
    out = ["", f"guardrail decisions: {len(report['guardrail_decisions'])}"]
    if report["guardrail_decisions"]:
        out += _table(
            [
                (d["of"], d["status"], d["count"], d["reason"])
                for d in report["guardrail_decisions"]
            ],
            ("of", "status", "count", "reason"),
        )
    return out
