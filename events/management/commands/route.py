import json
import sys

from django.core.management.base import BaseCommand, CommandError

from events.intake import routing


class Command(BaseCommand):
    help = (
        "Routes. `route test` shows, for every route, whether an event matches and why not, "
        "and the parameters its action would get. It changes nothing and runs no connector. "
        "See docs/routing.md."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        test = sub.add_parser("test", help="Check an event against every route.")
        which = test.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--event",
            metavar="ID",
            help="A stored event: its id (UUID), <source>/<event id>, or the event id alone.",
        )
        which.add_argument(
            "--body",
            metavar="JSON",
            help="An event described by hand: its JSON payload (`-` reads it from stdin). "
            "Give --source and --type with it.",
        )
        test.add_argument("--source", help="With --body: the source it comes from.")
        test.add_argument("--type", dest="event_type", help="With --body: its event type.")
        test.add_argument(
            "--header",
            action="append",
            default=[],
            metavar="'NAME: VALUE'",
            help="With --body: a request header. Repeat for more.",
        )
        test.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    def handle(self, *args, **options):
        verdicts = self._verdicts(options)
        if options["as_json"]:
            self.stdout.write(json.dumps([v.as_dict() for v in verdicts], indent=2))
            return
        if not verdicts:
            self.stdout.write("There are no routes.")
        for verdict in verdicts:
            self.stdout.write(self._line(verdict))

    def _verdicts(self, options):
        if options["event"] is not None:
            if options["source"] or options["event_type"] or options["header"]:
                raise CommandError("--source, --type and --header go with --body, not --event.")
            try:
                return routing.explain_event(routing.find_event(options["event"]))
            except LookupError as exc:
                raise CommandError(str(exc)) from None
        if not options["source"] or not options["event_type"]:
            raise CommandError("--body needs --source and --type: the filter may ask for them.")
        text = sys.stdin.read() if options["body"] == "-" else options["body"]
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"--body is not JSON: {exc}") from None
        try:
            headers = routing.parse_headers(options["header"])
        except ValueError as exc:
            raise CommandError(f"--header {exc}") from None
        return routing.explain(
            source=options["source"],
            event_type=options["event_type"],
            payload=payload,
            headers=headers,
        )

    def _line(self, verdict) -> str:
        route = verdict.route
        head = f"{route.name}  ({route.event_type} → {route.connector}.{route.action})"
        if verdict.matched:
            lines = [self.style.SUCCESS(f"MATCH     {head}")]
            if verdict.params_error:
                lines.append(f"          but its action would fail: {verdict.params_error}")
            else:
                lines.append(f"          params: {json.dumps(verdict.params, ensure_ascii=False)}")
        else:
            lines = [f"no match  {head}"]
            lines += [f"          {verdict.check.step}: {why}" for why in verdict.check.reasons]
        if verdict.changed_since:
            arrived = "matched" if verdict.recorded else "did not match"
            lines.append(f"          (when the event arrived it {arrived}: the route changed)")
        for execution in verdict.executions:
            lines.append(f"          execution {execution.pk}: {execution.status}")
        return "\n".join(lines)
