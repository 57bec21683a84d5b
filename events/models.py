import hashlib
import json
import re
import secrets
import uuid
from datetime import timedelta

from django import forms
from django.db import connections, models, transaction
from django.db.models.functions import Collate
from django.utils import timezone

from connectors import templating
from connectors.models import OnFailure, Route
from guardrails.config import WatchedQuerySet
from lib import filters


def hash_key(key: str) -> str:
    """API keys are random and long, so one SHA-256 is enough and allows indexed lookup."""
    return hashlib.sha256(key.encode()).hexdigest()


class AuthScheme(models.TextChoices):
    """How a source proves a request is its own. See docs/sources.md."""

    API_KEY = "api_key", "API key"
    STANDARD_WEBHOOKS = "standard_webhooks", "Standard Webhooks"
    GITHUB = "github", "GitHub"
    STRIPE = "stripe", "Stripe"
    SHOPIFY = "shopify", "Shopify"
    SLACK = "slack", "Slack"
    INTERNAL = "internal", "internal (the runtime's own follow-up events)"


# The built-in source of the events routes emit as follow-ups (docs/workflows.md). It takes
# no HTTP delivery: it has no credential, and none can be issued to it.
INTERNAL_SOURCE = "internal"


class IdFrom(models.TextChoices):
    DEFAULT = "default", "the scheme's default"
    HEADER = "header", "a request header"
    BODY = "body", "a path in the JSON body"
    BODY_SHA256 = "body_sha256", "SHA-256 of the raw body"


class TypeFrom(models.TextChoices):
    DEFAULT = "default", "the scheme's default"
    HEADER = "header", "a request header"
    BODY = "body", "a path in the JSON body"
    FIXED = "fixed", "a fixed type"


class HeaderNamesFormField(forms.CharField):
    """Header names typed as text, separated by commas or new lines; a list once cleaned.
    Whether each is a header name is the model's check (Source.clean)."""

    widget = forms.TextInput

    def prepare_value(self, value):
        return ", ".join(str(v) for v in value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        names = (name.strip() for name in re.split(r"[,\n]", super().to_python(value)))
        return [name for name in names if name]


class HeaderNamesField(models.JSONField):
    """A list of header names (JSON), edited in forms as comma-separated text."""

    def formfield(self, **kwargs):
        return models.Field.formfield(self, **{"form_class": HeaderNamesFormField, **kwargs})


class SourceQuerySet(WatchedQuerySet):
    """Cached per process by ingestion (events/sources/catalog.py): every change bumps
    the token."""


class Source(models.Model):
    """Who may send events, how they prove it, and where each event's id and type come from."""

    name = models.SlugField(
        max_length=100, unique=True, help_text="Also the URL: POST /webhook/<name>."
    )
    enabled = models.BooleanField(default=True)
    auth_scheme = models.CharField(
        max_length=max(len(v) for v in AuthScheme.values),
        choices=AuthScheme.choices,
        default=AuthScheme.API_KEY,
    )
    api_key_header = models.CharField(
        max_length=100,
        default="X-API-Key",
        help_text="Where an api_key source's sender puts its key (on POST /webhook/<name>).",
    )
    event_id_from = models.CharField(
        max_length=max(len(v) for v in IdFrom.values),
        choices=IdFrom.choices,
        default=IdFrom.DEFAULT,
        help_text="Where the event id comes from. Duplicates are detected per source by it.",
    )
    event_id_field = models.CharField(
        max_length=255, blank=True, help_text="The header name or the body path (a.b.c)."
    )
    type_from = models.CharField(
        max_length=max(len(v) for v in TypeFrom.values),
        choices=TypeFrom.choices,
        default=TypeFrom.DEFAULT,
    )
    type_field = models.CharField(
        max_length=255, blank=True, help_text="The header name, the body path, or the type."
    )
    redact_headers = HeaderNamesField(
        default=list,
        blank=True,
        help_text="More request headers to store as [redacted], besides those named like a "
        "credential (authorization, cookie, *-token, *-signature...). Comma-separated.",
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = SourceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        """Save; a renamed source takes the routes that listen to it along (their
        `sources` name it), in the same transaction."""
        old = None
        if self.pk is not None and not kwargs.get("force_insert"):
            old = (
                Source.objects.filter(pk=self.pk)
                .exclude(name=self.name)
                .values_list("name", flat=True)
                .first()
            )
        with transaction.atomic():
            super().save(*args, **kwargs)
            if old is not None:
                Route.objects.rename_source(old, self.name)

    def clean(self):
        # Inside: the rules module reads these models, so it cannot be imported above.
        from events.sources import rules

        if (self.auth_scheme == AuthScheme.INTERNAL) != (self.name == INTERNAL_SOURCE):
            raise forms.ValidationError(
                {
                    "auth_scheme": f"The {INTERNAL_SOURCE!r} source is built in, with the "
                    "internal scheme; no other source may have either."
                }
            )
        rules.check_rules(self)

    @classmethod
    def internal(cls) -> "Source":
        """The built-in source of follow-up events, created on first use (an insert that
        does nothing when another process made it first)."""
        source = cls.objects.filter(name=INTERNAL_SOURCE).first()
        if source is None:
            cls.objects.bulk_create(
                [cls(name=INTERNAL_SOURCE, auth_scheme=AuthScheme.INTERNAL)],
                ignore_conflicts=True,
            )
            source = cls.objects.get(name=INTERNAL_SOURCE)
        return source

    def issue_key(self, *, key: str | None = None, label: str = "") -> tuple["SourceKey", str]:
        """Add an API key; returns the row and the plain key, which is never stored."""
        key = key or f"ak_{secrets.token_urlsafe(32)}"
        row = SourceKey.objects.create(
            source=self,
            kind=CredentialKind.API_KEY,
            key_hash=hash_key(key),
            prefix=key[:6],
            label=label,
        )
        return row, key


class CredentialKind(models.TextChoices):
    API_KEY = "api_key", "API key (stored hashed)"
    SECRET = "secret", "signing secret (stored encrypted)"


class SourceKeyQuerySet(WatchedQuerySet):
    # Recording a key's last use is bookkeeping, not a change to what is accepted.
    quiet_fields = frozenset({"last_used_at"})

    def active(self, now=None):
        """Keys a request may use at `now`: not revoked, not expired by then."""
        return self.filter(active_condition(now or timezone.now()))


def active_condition(now, prefix: str = "") -> models.Q:
    """The condition SourceKey.objects.active() filters on; `prefix` ("keys__") applies
    it across a relation, as a Count(filter=...) on sources does."""
    return models.Q(**{f"{prefix}revoked_at__isnull": True}) & (
        models.Q(**{f"{prefix}expires_at__isnull": True})
        | models.Q(**{f"{prefix}expires_at__gt": now})
    )


class SourceKey(models.Model):
    """One credential of a source: an API key (hashed) or a signing secret (encrypted with
    a key derived from SECRET_KEY). Several may be active at once, for rotation."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(
        max_length=max(len(v) for v in CredentialKind.values),
        choices=CredentialKind.choices,
        default=CredentialKind.API_KEY,
        editable=False,
    )
    key_hash = models.CharField(max_length=64, editable=False, db_index=True)
    secret_ciphertext = models.TextField(blank=True, editable=False)
    prefix = models.CharField(
        max_length=12,
        editable=False,
        help_text="The first characters, to tell credentials apart.",
    )
    label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Refused from this time on (set by rotation)."
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SourceKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "credential"
        ordering = ["-created_at"]
        constraints = [
            # /webhook finds the source by its key, so an API key belongs to one source.
            models.UniqueConstraint(
                fields=["key_hash"],
                condition=models.Q(kind="api_key"),
                name="events_sourcekey_api_key_uniq",
            ),
        ]

    def __str__(self):
        return f"{self.prefix}…"

    def is_active_at(self, now) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def is_active(self) -> bool:
        return self.is_active_at(timezone.now())


class RejectedRequest(models.Model):
    """Requests refused with 401, counted per day, source and reason, for operators.

    The sender only ever sees one uniform 401; the reason is kept here. Replays of a signed
    body under a new event id (reason `replay`) are counted here too, though the sender is
    answered `200 duplicate`."""

    day = models.DateField()
    source_name = models.CharField(
        max_length=100, help_text="The source, or `?` when the name or key matched none."
    )
    reason = models.CharField(max_length=40)
    count = models.PositiveBigIntegerField(default=0)
    last_seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "-count"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "source_name", "reason"], name="events_rejected_day_uniq"
            ),
        ]

    def __str__(self):
        return f"{self.day} {self.source_name} {self.reason}: {self.count}"


class EventStatus(models.TextChoices):
    ACCEPTED = "accepted"
    """Stored and handed to its routes' executions."""
    UNROUTED = "unrouted"
    """Stored, but no enabled route matched its type. Replay it once a route exists."""
    HELD = "held"
    """Stored while the kill switch was engaged; its executions wait for an operator."""
    BLOCKED = "blocked"
    """Stored, but a guardrail refused it; the reason is recorded."""


# A search by payload field reads at most this many of the newest events where no index
# serves it (SQLite); PostgreSQL answers through the GIN index of migration 0010.
PAYLOAD_SEARCH_SCAN = 20_000
_PAYLOAD_TERM = re.compile(r"^([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)=(.+)$")


def payload_field_term(term: str) -> tuple[list[str], list] | None:
    """`order.id=123` as (["order", "id"], [123, "123"]): the path, and the values it may
    hold (the JSON one the text reads as, and the text itself). None for another term."""
    found = _PAYLOAD_TERM.match(term.strip())
    if found is None:
        return None
    path, text = found.group(1).split("."), found.group(2).strip()
    try:
        as_json = json.loads(text)
    except ValueError:
        return path, [text]
    values = [as_json] if isinstance(as_json, bool | int | float | str) else []
    return path, values + ([text] if text not in values else [])


# A search by event id prefix (`evt_3f9a`) reads at most this many event ids, the first in
# byte order, through an index: events_event_event_id_idx on SQLite (which compares text
# byte by byte), the C-collated index of migration 0013 on PostgreSQL. Terms shorter than
# EVENT_ID_PREFIX_MIN, or with other than visible ASCII, are looked up exactly only.
EVENT_ID_PREFIX_MIN = 4
EVENT_ID_PREFIX_SCAN = 200
_PREFIX_TERM = re.compile(r"^[\x21-\x7e]+$")


def event_id_prefix_term(term: str) -> str | None:
    """`term` when it may be the start of an event id: at least EVENT_ID_PREFIX_MIN
    visible ASCII characters, no space. None otherwise."""
    term = term.strip()
    if len(term) < EVENT_ID_PREFIX_MIN or not _PREFIX_TERM.match(term):
        return None
    return term


class EventQuerySet(models.QuerySet):
    def with_event_id_prefix(self, prefix: str, *, using=None):
        """Events whose event id starts with `prefix` (case-sensitive), ordered by event id
        byte by byte, so a slice reads that many entries of an index and no more.

        A range rather than LIKE: SQLite's LIKE ignores case and no plain index serves it.
        PostgreSQL compares in the C collation, the index's, whatever the database's is
        (under a linguistic collation `EVT_1` would sort between `evt_1` and `evt_2`).
        `prefix` is visible ASCII (event_id_prefix_term): its last character plus one
        bounds the range."""
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        vendor = connections[using or self.db].vendor
        key = Collate("event_id", "C") if vendor == "postgresql" else models.F("event_id")
        return (
            self.alias(event_id_bytes=key)
            .filter(event_id_bytes__gte=prefix, event_id_bytes__lt=after)
            .order_by("event_id_bytes")
        )

    def with_payload_field(self, path: list[str], values: list, *, using=None):
        """Events whose payload holds one of `values` at `path`. PostgreSQL: containment,
        through the GIN index. Elsewhere: a key lookup over the newest
        PAYLOAD_SEARCH_SCAN events only, so the search stays bounded."""
        vendor = connections[using or self.db].vendor
        if vendor == "postgresql":
            match = models.Q()
            for value in values:
                nested = value
                for key in reversed(path):
                    nested = {key: nested}
                match |= models.Q(payload__contains=nested)
            return self.filter(match)
        newest = Event.objects.order_by("-received_at").values("pk")[:PAYLOAD_SEARCH_SCAN]
        lookup = "payload__" + "__".join(path)
        match = models.Q()
        for value in values:
            match |= models.Q(**{lookup: value})
        return self.filter(match, pk__in=newest)


class Event(models.Model):
    """One inbound delivery, stored once per (source, event id)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="events")
    event_id = models.CharField(max_length=255, help_text="The sender's id for this event.")
    type = models.CharField(max_length=255)
    status = models.CharField(
        max_length=max(len(v) for v in EventStatus.values),
        choices=EventStatus.choices,
        default=EventStatus.ACCEPTED,
    )
    status_reason = models.TextField(blank=True)
    payload = models.JSONField()
    headers = models.JSONField(
        default=dict, help_text="Selected request headers, secrets redacted."
    )
    body_hash = models.CharField(
        max_length=64,
        help_text="SHA-256 of the canonical JSON body: tells a redelivery from a conflict.",
    )
    received_at = models.DateTimeField(default=timezone.now)
    conflicts = models.PositiveIntegerField(
        default=0,
        help_text="Deliveries refused because they reused this event id with another body.",
    )
    caused_by = models.ForeignKey(
        "Execution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="emitted",
        help_text="The execution whose success emitted it (a chained step); empty for an "
        "event that came from outside.",
    )
    # db_default as well: rows written by code that predates the column (a host not yet
    # upgraded in a rolling deploy, raw SQL) get it too.
    depth = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        help_text="Steps from the event that came from outside (0) to this one.",
    )
    matched_routes = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="Ids of the routes it matched, decided when it arrived (and when it was "
        "routed again). Empty: it matched none. Null: stored before routes were recorded.",
    )

    objects = EventQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "event_id"], name="events_event_source_event_id_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["-received_at"], name="events_event_received_idx"),
            models.Index(fields=["type", "-received_at"], name="events_event_type_idx"),
            models.Index(fields=["status", "-received_at"], name="events_event_status_idx"),
            # The admin's source filter and its search by event id alone (the unique
            # constraint leads with the source, so it cannot serve that search).
            models.Index(fields=["source", "-received_at"], name="events_event_source_idx"),
            models.Index(fields=["event_id"], name="events_event_event_id_idx"),
        ]

    def __str__(self):
        return f"{self.source.name}/{self.event_id}" if self.source_id else self.event_id

    def subject(self) -> dict:
        """What route filters are matched against (lib.filters.subject)."""
        return filters.subject(
            data=self.payload, headers=self.headers, source=self.source.name, event_type=self.type
        )

    def template_scope(self) -> dict:
        """The names under `event` that route templates see (connectors.templating)."""
        return templating.event_namespace(
            event_id=self.event_id,
            event_type=self.type,
            payload=self.payload,
            headers=self.headers,
            received_at=self.received_at.isoformat() if self.received_at else None,
        )


class SignedBody(models.Model):
    """A body a source signed over alone (GitHub, Shopify), by its SHA-256, and the event
    it arrived as: the same bytes again under another event id are a replay, answered as
    a duplicate of that event. Unique per (source, digest); ingestion claims a row with one
    INSERT ... ON CONFLICT in the event's transaction, so concurrent replays store nothing.

    It lives as long as its event (prune deletes both) and counts for at most the dedup
    window (DEDUP_RETENTION_DAYS): an older row is taken over by the next event."""

    # The unique constraint leads with the source: it serves as the source's index.
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+", db_index=False)
    digest = models.CharField(max_length=64, help_text="SHA-256 of the raw body, hex.")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+")
    seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "digest"], name="events_signedbody_source_digest_uniq"
            ),
        ]

    def __str__(self):
        return f"{self.digest[:12]}… → {self.event_id}"


class ExecutionStatus(models.TextChoices):
    QUEUED = "queued"
    """Waiting for a worker to claim it."""
    RUNNING = "running"
    """A worker holds it and is calling the connector."""
    RETRYING = "retrying"
    """The last attempt failed with a retryable error; it runs again at next_attempt_at."""
    SUCCEEDED = "succeeded"
    """The connector's action succeeded."""
    FAILED = "failed"
    """The dead letter: a permanent error, or attempts exhausted."""
    HELD = "held"
    """Stopped by the kill switch; an operator releases it."""
    BLOCKED = "blocked"
    """A guardrail refused it; the reason is recorded."""
    CANCELLED = "cancelled"
    """An operator cancelled it."""
    DRY_RUN = "dry_run"
    """Ran in dry-run mode: the connector described what it would do; nothing was done."""
    AWAITING_APPROVAL = "awaiting_approval"
    """Its route requires approval: it waits for an operator to approve or reject it."""
    REJECTED = "rejected"
    """An operator rejected it; it never ran. The reason is recorded."""
    EXPIRED = "expired"
    """Not approved within its route's approval_timeout; it never ran."""


# The groups of execution statuses the code asks about, in one place.
PENDING_STATUSES = [ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.RETRYING]
# What a worker may claim once next_attempt_at has come: the engine's queue.
CLAIMABLE_STATUSES = [ExecutionStatus.QUEUED, ExecutionStatus.RETRYING]
FINISHED_STATUSES = [
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.DRY_RUN,
    ExecutionStatus.REJECTED,
    ExecutionStatus.EXPIRED,
]
# Work left to do, or waiting for an operator: retention never touches these.
UNFINISHED_STATUSES = [*PENDING_STATUSES, ExecutionStatus.HELD, ExecutionStatus.AWAITING_APPROVAL]
# What replay picks up (succeeded ones only when forced), cancel stops, release lets go.
REPLAYABLE_STATUSES = [
    ExecutionStatus.FAILED,
    ExecutionStatus.DRY_RUN,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.BLOCKED,
    ExecutionStatus.HELD,
    ExecutionStatus.REJECTED,
    ExecutionStatus.EXPIRED,
]
# Awaiting approval is not cancellable: an operator rejects it, with a reason.
CANCELLABLE_STATUSES = [ExecutionStatus.QUEUED, ExecutionStatus.RETRYING, ExecutionStatus.HELD]
RELEASABLE_STATUSES = [ExecutionStatus.HELD]
# What approve and reject act on (docs/workflows.md, "Approval").
APPROVABLE_STATUSES = [ExecutionStatus.AWAITING_APPROVAL]
# Ordering keys (docs/workflows.md): an execution with a key in one of these holds back
# the later ones of its route and key; a running one holds back every other one.
KEY_WAITING_STATUSES = [
    ExecutionStatus.QUEUED,
    ExecutionStatus.RETRYING,
    ExecutionStatus.HELD,
    ExecutionStatus.AWAITING_APPROVAL,
]
# ... and in one of these too, when its route's on_failure is `block`; an operator replays
# or cancels it to let the rest go (a failed one with a key may be cancelled).
KEY_DEAD_STATUSES = [ExecutionStatus.FAILED, ExecutionStatus.BLOCKED]
KEY_HOLDING_STATUSES = [ExecutionStatus.RUNNING, *KEY_WAITING_STATUSES, *KEY_DEAD_STATUSES]
# The two ends the routes list counts per route: the action done, and the dead letter.
SUCCEEDED_OR_FAILED = [ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED]


class ExecutionQuerySet(models.QuerySet):
    def queued(self):
        return self.filter(status=ExecutionStatus.QUEUED)

    def held(self):
        return self.filter(status=ExecutionStatus.HELD)

    def awaiting_approval(self):
        """Waiting for an operator to approve or reject them."""
        return self.filter(status=ExecutionStatus.AWAITING_APPROVAL)

    def approval_expired(self, now=None):
        """Awaiting approval past their deadline (expires_at): what the expiry sweep ends.
        Served by the partial index events_execution_expiry_idx."""
        return self.awaiting_approval().filter(expires_at__lte=now or timezone.now())

    def pending(self):
        """Not finished: what the worker and the reaper look at."""
        return self.filter(status__in=PENDING_STATUSES)

    def running(self):
        """Claimed by a worker: in flight, or its worker died and the lease has not expired."""
        return self.filter(status=ExecutionStatus.RUNNING)

    def cancellable(self):
        """What cancel stops: not started (queued, retrying, held); and, with an ordering
        key, dead (failed, blocked), so that the rest of its key may go on."""
        return self.filter(
            models.Q(status__in=CANCELLABLE_STATUSES)
            | (models.Q(status__in=KEY_DEAD_STATUSES) & ~models.Q(ordering_key=""))
        )

    def due(self, now=None):
        """Claimable now: queued or retrying, and next_attempt_at has come (the partial
        index events_execution_claim_idx serves this)."""
        return self.filter(
            status__in=CLAIMABLE_STATUSES, next_attempt_at__lte=now or timezone.now()
        )

    def running_by_route(self) -> dict[int, int]:
        """{route id: running executions} over all workers, for the routes in this
        queryset's rows (expired leases not yet reaped included: their action may still
        be going on). Served by the partial index on running executions."""
        return dict(
            self.running().order_by().values_list("route_id").annotate(n=models.Count("pk"))
        )

    def succeeded_and_failed_by_route(self, since) -> dict[int, dict[str, int]]:
        """{route id: {status: n}} of the executions created at or after `since` that
        succeeded or failed (SUCCEEDED_OR_FAILED), for the routes in this queryset's rows; a
        status with none is missing. One grouped query, whatever the number of routes."""
        rows = (
            self.filter(status__in=SUCCEEDED_OR_FAILED, created_at__gte=since)
            .order_by()
            .values_list("route_id", "status")
            .annotate(n=models.Count("pk"))
        )
        found: dict[int, dict[str, int]] = {}
        for route_id, status, n in rows:
            found.setdefault(route_id, {})[status] = n
        return found

    def expired(self, now=None):
        """Running with a lease that has run out: its worker stopped answering."""
        return self.running().filter(lease_expires_at__lt=now or timezone.now())


class Execution(models.Model):
    """One route's run for one event: the unit the worker claims, retries and records.

    The executions table is the engine's queue: a worker claims due rows straight from
    it (events/engine/claims.py); nothing else has to be delivered for it to run."""

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="executions")
    route = models.ForeignKey(
        "connectors.Route", on_delete=models.PROTECT, related_name="executions"
    )
    status = models.CharField(
        max_length=max(len(v) for v in ExecutionStatus.values),
        choices=ExecutionStatus.choices,
        default=ExecutionStatus.QUEUED,
    )
    status_reason = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="Tries since it was created or last replayed; compared with max attempts.",
    )
    total_attempts = models.PositiveIntegerField(
        default=0, help_text="Tries over its whole life, replays included; numbers its attempts."
    )
    idempotency_key = models.CharField(
        max_length=64,
        unique=True,
        help_text="Handed to the connector; stable across retries and replays of this execution.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(
        default=timezone.now,
        help_text="A queued or retrying execution is not claimed before this time "
        "(retry backoff, a rate limit, an open circuit).",
    )
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    ordering_key = models.CharField(
        max_length=255,
        blank=True,
        default="",
        db_default="",
        help_text="Its route's ordering key rendered for its event: executions of one route "
        "with the same key run one at a time, in the order they were created. Empty: "
        "unordered.",
    )
    emit_generation = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        help_text="Which follow-up event its success emits: the same one (same event id) "
        "through retries and replays, a new one after a replay that asks to emit again.",
    )
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Awaiting approval: it ends expired if not approved by this time (its "
        "route's approval_timeout). Empty: it waits until an operator acts.",
    )

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "route"], name="events_execution_event_route_uniq"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ExecutionStatus.values),
                name="events_execution_status_valid",
            ),
            # A running execution always has its owner and an end to its lease, so the
            # reaper can always take it back.
            models.CheckConstraint(
                condition=~models.Q(status=ExecutionStatus.RUNNING)
                | (models.Q(lease_expires_at__isnull=False) & ~models.Q(lease_owner="")),
                name="events_execution_running_has_lease",
            ),
            # One running execution per route and ordering key, whatever the claim query
            # does: the database refuses a second.
            models.UniqueConstraint(
                fields=["route", "ordering_key"],
                condition=models.Q(status=ExecutionStatus.RUNNING) & ~models.Q(ordering_key=""),
                name="events_execution_one_running_per_key",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="events_execution_status_idx"),
            # The admin's list order and its route filter.
            models.Index(fields=["-created_at"], name="events_execution_created_idx"),
            models.Index(fields=["route", "-created_at"], name="events_execution_route_idx"),
            # The claim: per route, the due rows in order. Only waiting rows are in it.
            models.Index(
                fields=["route", "next_attempt_at"],
                name="events_execution_claim_idx",
                condition=models.Q(status__in=CLAIMABLE_STATUSES),
            ),
            # The cheap "is anything due?" poll and the queue-wait figures.
            models.Index(
                fields=["next_attempt_at"],
                name="events_execution_due_idx",
                condition=models.Q(status__in=CLAIMABLE_STATUSES),
            ),
            # In flight: lease renewal, the reaper, and max_in_flight counts.
            models.Index(
                fields=["route", "lease_expires_at"],
                name="events_execution_running_idx",
                condition=models.Q(status=ExecutionStatus.RUNNING),
            ),
            # Ordering keys: what holds back an execution of a key (claims.HEAD).
            models.Index(
                fields=["route", "ordering_key", "created_at"],
                name="events_execution_key_idx",
                condition=models.Q(status__in=KEY_HOLDING_STATUSES) & ~models.Q(ordering_key=""),
            ),
            # Awaiting approval: the expiry sweep, the dashboard's count and oldest wait.
            models.Index(
                fields=["expires_at"],
                name="events_execution_expiry_idx",
                condition=models.Q(status=ExecutionStatus.AWAITING_APPROVAL),
            ),
        ]

    def __str__(self):
        return f"execution {self.pk} ({self.status})"

    @staticmethod
    def new_idempotency_key() -> str:
        return uuid.uuid4().hex

    @classmethod
    def new(
        cls, event, route, *, now, status=ExecutionStatus.QUEUED, reason: str = ""
    ) -> "Execution":
        """A new execution of `route` for `event`, due at once (not saved yet), with its
        ordering key rendered from the event. A queued one of a route that requires
        approval awaits approval instead, until its route's approval_timeout from now; so
        does a held one (the kill switch was engaged): once approved, the claim holds it
        while the switch stays engaged, so a held execution has always been approved."""
        expires_at = None
        if status in (ExecutionStatus.QUEUED, ExecutionStatus.HELD) and route.requires_approval:
            status, reason = ExecutionStatus.AWAITING_APPROVAL, "awaiting approval"
            expires_at = route.approval_deadline(now)
        return cls(
            event=event,
            route=route,
            status=status,
            status_reason=reason,
            expires_at=expires_at,
            idempotency_key=cls.new_idempotency_key(),
            created_at=now,
            updated_at=now,
            next_attempt_at=now,
            ordering_key=route.key_for(event.template_scope()) if route.ordering_key else "",
        )

    def holder(self) -> "Execution | None":
        """The execution that holds this one back under its ordering key now, or None: a
        running one of its key, else the earliest earlier one still waiting (or dead, when
        its route's on_failure is block). The rule is events.engine.claims.HEAD's."""
        if not self.ordering_key:
            return None
        same_key = Execution.objects.filter(
            route_id=self.route_id, ordering_key=self.ordering_key
        ).exclude(pk=self.pk)
        running = same_key.filter(status=ExecutionStatus.RUNNING).order_by("created_at").first()
        if running is not None:
            return running
        holding = list(KEY_WAITING_STATUSES)
        if self.route.on_failure == OnFailure.BLOCK:
            holding += KEY_DEAD_STATUSES
        earlier = models.Q(created_at__lt=self.created_at) | models.Q(
            created_at=self.created_at, pk__lt=self.pk
        )
        return same_key.filter(earlier, status__in=holding).order_by("created_at", "pk").first()


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "succeeded"
    """The action succeeded."""
    RETRYABLE_ERROR = "retryable_error"
    """The action failed in a way that may pass on another try."""
    PERMANENT_ERROR = "permanent_error"
    """The action failed and another try will not help."""
    DRY_RUN = "dry_run"
    """Dry run: the connector described what it would do."""
    LOST = "lost"
    """The worker vanished mid-action (its lease expired); the action may or may not have run."""
    ABANDONED = "abandoned"
    """The worker was told to stop at once mid-action and gave the execution back."""


class AttemptQuerySet(models.QuerySet):
    def start_times(self, *, since, limit: int, route_id=None, connector=None) -> list:
        """Start times of attempts since `since` (oldest first, at most the `limit` newest)
        for one route or one connector: what rate limits count."""
        attempts = self.filter(started_at__gte=since)
        if route_id is not None:
            attempts = attempts.filter(execution__route_id=route_id)
        if connector is not None:
            attempts = attempts.filter(execution__route__connector=connector)
        newest = attempts.order_by("-started_at").values_list("started_at", flat=True)[:limit]
        return sorted(newest)


class Attempt(models.Model):
    """One try of an execution."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveSmallIntegerField()
    worker = models.CharField(max_length=128, blank=True, help_text="The worker that ran it.")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(
        max_length=max(len(v) for v in AttemptOutcome.values),
        choices=AttemptOutcome.choices,
        blank=True,
    )
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    response_summary = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    objects = AttemptQuerySet.as_manager()

    class Meta:
        ordering = ["execution", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["execution", "number"], name="events_attempt_execution_number_uniq"
            ),
        ]
        indexes = [
            # Rate limits count recent starts.
            models.Index(fields=["started_at"], name="events_attempt_started_idx"),
            # The admin's outcome filter, in its list order.
            models.Index(fields=["outcome", "-started_at"], name="events_attempt_outcome_idx"),
        ]

    def __str__(self):
        return f"attempt {self.number} of execution {self.execution_id}"


class WorkerHeartbeatQuerySet(models.QuerySet):
    def live(self, stale_after_seconds: int, now=None):
        """Workers heard from within `stale_after_seconds` (WORKER_STALE_SECONDS)."""
        since = (now or timezone.now()) - timedelta(seconds=stale_after_seconds)
        return self.filter(last_seen_at__gte=since)

    def stale(self, older_than_seconds: int, now=None):
        """Workers not heard from for `older_than_seconds`: gone, their rows kept a while."""
        before = (now or timezone.now()) - timedelta(seconds=older_than_seconds)
        return self.filter(last_seen_at__lt=before)


class WorkerHeartbeat(models.Model):
    """A worker process that is alive, or was: one row per worker, refreshed on an interval."""

    worker_id = models.CharField(max_length=128, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField(
        default=0, help_text="Actions it runs at once (runworker --concurrency)."
    )
    in_flight = models.PositiveIntegerField(
        default=0, help_text="Actions it was running at its last heartbeat."
    )
    claims = models.PositiveBigIntegerField(
        default=0, help_text="Executions it has claimed since it started."
    )
    started_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    executions_run = models.PositiveIntegerField(default=0)

    objects = WorkerHeartbeatQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self):
        return self.worker_id


class BulkAction(models.TextChoices):
    REPLAY = "replay"
    """Run again as a new attempt with the same idempotency key."""
    CANCEL = "cancel"
    """Cancel what has not started."""
    RELEASE = "release"
    """Queue held executions again."""
    APPROVE = "approve"
    """Queue executions awaiting approval: they run through the normal path."""
    REJECT = "reject"
    """End executions awaiting approval as rejected: they never run."""


class BulkStatus(models.TextChoices):
    PENDING = "pending"
    """Created; waiting for a worker to pick it up."""
    RUNNING = "running"
    """A worker is going through its executions, batch by batch."""
    DONE = "done"
    """Every execution was processed (errors, if any, are counted)."""
    FAILED = "failed"
    """Stopped before the end; `last_error` says why."""


# An operation with no finished batch for this long lost its worker: another worker takes
# it over where it stopped. A batch takes seconds.
BULK_STALLED_AFTER = timedelta(minutes=5)


class BulkOperationQuerySet(models.QuerySet):
    def runnable(self, now=None):
        """Operations a worker should take: pending, or running with no finished batch
        for BULK_STALLED_AFTER (their worker died)."""
        stale = (now or timezone.now()) - BULK_STALLED_AFTER
        return self.filter(
            models.Q(status=BulkStatus.PENDING)
            | models.Q(status=BulkStatus.RUNNING, progressed_at__lt=stale)
            | models.Q(status=BulkStatus.RUNNING, progressed_at__isnull=True, started_at__lt=stale)
        )


class BulkOperation(models.Model):
    """An operator action on more executions than a request should handle, run by a worker.

    The selection is stored as the list of execution ids it matched when the operator
    applied the action, so the operation can be re-run and audited as one act."""

    action = models.CharField(
        max_length=max(len(v) for v in BulkAction.values), choices=BulkAction.choices
    )
    force = models.BooleanField(
        default=False, help_text="Replay succeeded executions too (the operator confirmed)."
    )
    status = models.CharField(
        max_length=max(len(v) for v in BulkStatus.values),
        choices=BulkStatus.choices,
        default=BulkStatus.PENDING,
    )
    actor = models.CharField(max_length=150)
    via = models.CharField(max_length=16, default="admin")
    selection = models.TextField(blank=True, help_text="What the operator selected (filters).")
    reason = models.TextField(blank=True, help_text="Why, as the operator gave it: audited.")
    execution_ids = models.JSONField(default=list, help_text="The executions it applies to.")
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    affected = models.PositiveIntegerField(
        default=0, help_text="Executions the action changed (others were no longer eligible)."
    )
    errors = models.PositiveIntegerField(default=0, help_text="Executions in failed batches.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    progressed_at = models.DateTimeField(
        null=True, blank=True, help_text="When its last batch was done: shows it is alive."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BulkOperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(processed__lte=models.F("total")),
                name="events_bulkoperation_processed_lte_total",
            ),
        ]

    def __str__(self):
        return f"{self.get_action_display()} of {self.total} execution(s) ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (BulkStatus.PENDING, BulkStatus.RUNNING)

    @property
    def progress(self) -> str:
        """Processed of total, as in `12,000 / 40,000 (30%)`."""
        percent = 100 * self.processed // self.total if self.total else 100
        return f"{self.processed:,} / {self.total:,} ({percent}%)"
