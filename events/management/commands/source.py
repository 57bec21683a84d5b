import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from events.models import AuthScheme, IdFrom, Source, TypeFrom
from events.sources import credentials
from guardrails import audit
from guardrails.models import Via


class Command(BaseCommand):
    help = (
        "Manage sources: create one (prints its new key or secret once), rotate its "
        "credentials with an overlap, list them or show one. See docs/sources.md."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)

        create = sub.add_parser("create", help="Create a source and its first credential.")
        create.add_argument("name", help="Also its URL: POST /webhook/<name>.")
        create.add_argument("--scheme", required=True, choices=AuthScheme.values)
        self._secret_argument(create)
        create.add_argument(
            "--header", help="api_key only: the header the key comes in (default X-API-Key)."
        )
        ids = create.add_mutually_exclusive_group()
        ids.add_argument("--id-header", metavar="HEADER", help="Take the event id from a header.")
        ids.add_argument("--id-path", metavar="PATH", help="Take it from the body (a.b.c).")
        ids.add_argument(
            "--id-body-sha256",
            action="store_true",
            help="Use the SHA-256 of the raw body, for senders that send no id.",
        )
        types = create.add_mutually_exclusive_group()
        types.add_argument("--type-header", metavar="HEADER")
        types.add_argument("--type-path", metavar="PATH")
        types.add_argument("--type", metavar="TYPE", help="Give every event this type.")
        create.add_argument(
            "--redact-header",
            metavar="NAME",
            action="append",
            dest="redact_headers",
            default=[],
            help="Store this request header as [redacted], besides those named like a "
            "credential. Repeat for more.",
        )
        create.add_argument("--description", default="")
        self._actor_argument(create)

        rotate = sub.add_parser(
            "rotate", help="Add a new credential; the current ones expire after the overlap."
        )
        rotate.add_argument("name")
        self._secret_argument(rotate)
        rotate.add_argument(
            "--overlap",
            default="24h",
            help="How long the old credentials stay valid: 90s, 15m, 24h, 7d, 0 "
            "(default %(default)s).",
        )
        self._actor_argument(rotate)

        listing = sub.add_parser("list", help="Every source, its scheme and credentials.")
        listing.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

        show = sub.add_parser("show", help="One source: its URL, rules and credentials.")
        show.add_argument("name")
        show.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")

    @staticmethod
    def _secret_argument(parser):
        parser.add_argument(
            "--secret",
            help="Use this key or secret instead of generating one (required for Stripe, "
            "Shopify and Slack, which issue their own). `-` reads it from stdin, which keeps "
            "it out of the shell history.",
        )

    @staticmethod
    def _actor_argument(parser):
        parser.add_argument(
            "--actor",
            default=audit.cli_actor(),
            help="Who, for the audit log (default: %(default)r, the OS user).",
        )

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except credentials.SourceError as exc:
            raise CommandError(str(exc)) from None

    @staticmethod
    def _read_secret(secret):
        if secret == "-":  # noqa: S105 (read it from stdin)
            secret = sys.stdin.readline().strip()
        return secret

    def _create(self, *, name, scheme, secret, actor, description, **options):
        rules = {}
        if options["header"]:
            rules["api_key_header"] = options["header"]
        if options["redact_headers"]:
            rules["redact_headers"] = options["redact_headers"]
        for flag, where in (("id_header", IdFrom.HEADER), ("id_path", IdFrom.BODY)):
            if options[flag]:
                rules.update(event_id_from=where, event_id_field=options[flag])
        if options["id_body_sha256"]:
            rules["event_id_from"] = IdFrom.BODY_SHA256
        for flag, where in (
            ("type_header", TypeFrom.HEADER),
            ("type_path", TypeFrom.BODY),
            ("type", TypeFrom.FIXED),
        ):
            if options[flag]:
                rules.update(type_from=where, type_field=options[flag])
        if Source.objects.filter(name=name).exists():
            raise CommandError(f"A source named {name!r} already exists.")
        given = self._read_secret(secret)
        source, plain = credentials.create_source(
            name=name,
            scheme=scheme,
            secret=given,
            actor=actor,
            via=Via.CLI,
            description=description,
            **rules,
        )
        info = credentials.summary(source)
        self.stdout.write(f"Created source {name!r} ({source.get_auth_scheme_display()}).")
        self.stdout.write(f"  URL:       POST {info['url']}")
        if scheme == AuthScheme.API_KEY:
            self.stdout.write(f"  Header:    {source.api_key_header}")
        self._show_credential(scheme, plain, given)
        self._show_rules(info)

    def _show_rules(self, info):
        self.stdout.write(f"  Event id:  {info['event_id']}")
        self.stdout.write(f"  Type:      {info['type']}")
        if info["redact_headers"]:
            self.stdout.write(f"  Redacted:  {', '.join(info['redact_headers'])}")

    def _show_credential(self, scheme, plain, given):
        what = "API key" if scheme == AuthScheme.API_KEY else "Secret"
        if given:
            self.stdout.write(f"  {what}:    the one you gave ({credentials.prefix_of(plain)}…)")
        else:
            self.stdout.write(f"  {what}:    {plain}")
            self.stdout.write("             (shown once: copy it now)")

    def _rotate(self, *, name, secret, overlap, actor, **options):
        duration = credentials.parse_duration(overlap)
        given = self._read_secret(secret)
        with transaction.atomic():
            source = Source.objects.select_for_update().filter(name=name).first()
            if source is None:
                raise CommandError(f"No source named {name!r}.")
            done = credentials.rotate(
                source, secret=given, overlap=duration, actor=actor, via=Via.CLI
            )
        self.stdout.write(f"Rotated the credentials of {name!r}.")
        self._show_credential(source.auth_scheme, done.plain, given)
        if done.retiring:
            prefixes = ", ".join(f"{row.prefix}…" for row in done.retiring)
            self.stdout.write(
                f"  Still accepted until {done.retire_at:%Y-%m-%d %H:%M:%S %Z}: {prefixes}"
            )

    def _show(self, *, name, as_json: bool = False, **options):
        source = Source.objects.prefetch_related("keys").filter(name=name).first()
        if source is None:
            raise CommandError(f"No source named {name!r}.")
        info = credentials.summary(source)
        if as_json:
            self.stdout.write(json.dumps(info, indent=2))
            return
        state = "enabled" if info["enabled"] else "disabled"
        self.stdout.write(f"Source {name!r} ({source.get_auth_scheme_display()}, {state}).")
        self.stdout.write(f"  URL:       POST {info['url']}")
        if source.auth_scheme == AuthScheme.API_KEY:
            self.stdout.write(f"  Header:    {source.api_key_header}")
        self._show_rules(info)
        active = ", ".join(
            c["prefix"] + "…" + (f" (expires {c['expires_at'][:19]})" if c["expires_at"] else "")
            for c in info["active_credentials"]
        )
        self.stdout.write(f"  Active:    {active or 'none'}")
        self.stdout.write(f"  Last used: {(info['last_used_at'] or 'never')[:19]}")

    def _list(self, *, as_json: bool = False, **options):
        rows = [credentials.summary(s) for s in Source.objects.prefetch_related("keys")]
        if as_json:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        if not rows:
            self.stdout.write("No sources yet: manage.py source create NAME --scheme SCHEME")
            return
        header = ("name", "scheme", "enabled", "active", "last used", "event id", "type")
        table = [
            (
                r["name"],
                r["scheme"],
                "yes" if r["enabled"] else "no",
                ", ".join(
                    c["prefix"] + "…" + (" (expiring)" if c["expires_at"] else "")
                    for c in r["active_credentials"]
                )
                or "none",
                (r["last_used_at"] or "never")[:19].replace("T", " "),
                r["event_id"],
                r["type"],
            )
            for r in rows
        ]
        widths = [max(len(str(row[i])) for row in (header, *table)) for i in range(len(header))]
        for row in (header, *table):
            self.stdout.write(
                "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            )
