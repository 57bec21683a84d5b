import hashlib
import secrets

import jsonschema
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.utils import timezone

from lib.patterns import finite_json_problem


class Mode(models.TextChoices):
    RUNNING = "running"
    """Events are accepted and executed."""
    KILLED = "killed"
    """The kill switch is engaged: events are stored and held, nothing new is executed."""
    DRY_RUN = "dry_run"
    """Connectors describe what they would do instead of doing it."""


def new_config_token() -> str:
    return secrets.token_hex(16)


class RuntimeState(models.Model):
    """The one row that says whether the runtime may act. Read before every side effect."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    mode = models.CharField(
        max_length=max(len(m) for m in Mode.values), choices=Mode.choices, default=Mode.RUNNING
    )
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    reason = models.TextField(blank=True)
    config_token = models.CharField(
        max_length=32,
        default=new_config_token,
        editable=False,
        help_text="Changes with every guardrail setting, so workers know to reload theirs.",
    )

    class Meta:
        verbose_name = "kill switch"
        verbose_name_plural = "kill switch"
        permissions = [("change_kill_switch", "Can engage and release the kill switch")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(id=1), name="guardrails_runtimestate_singleton"
            ),
            models.CheckConstraint(
                condition=models.Q(mode__in=Mode.values), name="guardrails_runtimestate_mode_valid"
            ),
        ]

    def __str__(self):
        return f"Runtime is {self.get_mode_display().lower()}"

    @property
    def kill_switch_engaged(self) -> bool:
        return self.mode == Mode.KILLED

    def kill_switch_json(self) -> dict:
        return {
            "engaged": self.kill_switch_engaged,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "changed_by": self.changed_by or None,
            "reason": self.reason or None,
        }

    @classmethod
    def for_claim(cls) -> "RuntimeState":
        """The state, read inside a claim's transaction with a shared row lock.

        On PostgreSQL, FOR SHARE lets any number of claims read at once, while a kill
        switch change (FOR UPDATE) waits for the claims in flight to commit; a claim that
        starts after the change commits reads the new state. So no attempt can begin after
        a kill switch is committed. SQLite serialises write transactions anyway.
        """
        if connection.vendor == "postgresql":
            table = connection.ops.quote_name(cls._meta.db_table)
            rows = list(
                cls.objects.raw(
                    f"SELECT * FROM {table} WHERE id = %s FOR SHARE",  # noqa: S608
                    [cls.SINGLETON_ID],
                )
            )
            if rows:
                return rows[0]
        return cls.current()

    @classmethod
    def current(cls) -> "RuntimeState":
        """The state row, created as `running` the first time it is read."""
        # Read on every request and every claim: raw SQL skips the ORM's query compiler,
        # a quarter of the cost here.
        table = connection.ops.quote_name(cls._meta.db_table)
        sql = f"SELECT * FROM {table} WHERE id = %s"  # noqa: S608 (a model's own table)
        rows = list(cls.objects.raw(sql, [cls.SINGLETON_ID]))
        state = rows[0] if rows else None
        if state is None:
            state, _ = cls.objects.get_or_create(pk=cls.SINGLETON_ID)
        return state


class Via(models.TextChoices):
    ADMIN = "admin"
    """The Django admin."""
    API = "api"
    """The JSON operator API."""
    CLI = "cli"
    """A manage.py command."""
    SYSTEM = "system"
    """The runtime itself (the runaway breaker)."""


class OperatorActionQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("The audit log is append-only.")

    def delete(self):
        raise TypeError("The audit log is append-only.")


class OperatorAction(models.Model):
    """Append-only audit of every change an operator makes, from any surface."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150, help_text="Username of who acted.")
    via = models.CharField(max_length=max(len(v) for v in Via.values), choices=Via.choices)
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, blank=True)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = OperatorActionQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} via {self.via}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Audit log entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit log entries cannot be deleted.")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OperatorToken(models.Model):
    """A bearer token for the JSON operator API. Only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="operator_tokens"
    )
    name = models.CharField(max_length=100, blank=True, help_text="What this token is for.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="First characters, to tell tokens apart."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user, name: str = "", token: str | None = None) -> tuple["OperatorToken", str]:
        """Create a token for user; returns the row and the plain token, which is never stored."""
        token = token or "op_" + secrets.token_urlsafe(32)
        row = cls.objects.create(
            user=user, name=name, token_hash=hash_token(token), prefix=token[:8]
        )
        return row, token


class Scope(models.TextChoices):
    SOURCE = "source"
    """Events from one source."""
    ROUTE = "route"
    """Executions of one route."""
    CONNECTOR = "connector"
    """Executions of every route that uses one connector."""


class KillSwitchQuerySet(models.QuerySet):
    def engaged(self):
        """The switches holding their source, route or connector now (a partial index
        holds exactly these)."""
        return self.filter(engaged=True)


class KillSwitch(models.Model):
    """A kill switch for one source, route or connector (the global one is RuntimeState).

    A source's switch holds its new events at ingest; a route's or connector's holds its
    executions at claim time. Held executions wait for an operator's release.
    """

    scope = models.CharField(max_length=max(len(v) for v in Scope.values), choices=Scope.choices)
    name = models.CharField(max_length=100, help_text="The source, route or connector name.")
    engaged = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    objects = KillSwitchQuerySet.as_manager()

    class Meta:
        ordering = ["scope", "name"]
        verbose_name = "scoped kill switch"
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="guardrails_killswitch_uniq"),
        ]
        indexes = [
            models.Index(
                fields=["scope", "name"],
                name="guardrails_killswitch_on_idx",
                condition=models.Q(engaged=True),
            )
        ]

    def __str__(self):
        return f"{self.scope} {self.name}: {'engaged' if self.engaged else 'released'}"


class AllowedEventType(models.Model):
    """Event types a source may send. Once a source has any, other types are blocked:
    stored as `blocked` with the reason, and run after they are allowed and replayed."""

    source = models.CharField(max_length=100, help_text="The source name.")
    pattern = models.CharField(max_length=255, help_text="An event type, or a pattern with *.")

    class Meta:
        ordering = ["source", "pattern"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "pattern"], name="guardrails_allowedtype_uniq"
            ),
        ]

    def __str__(self):
        return f"{self.source}: {self.pattern}"


class RateLimit(models.Model):
    """At most `limit` executions of a route (or of a connector) start per window; the
    ones over it are deferred, without spending an attempt. Over `runaway_per_hour` in an
    hour, the route's own kill switch trips (two systems triggering each other)."""

    scope = models.CharField(
        max_length=max(len(v) for v in Scope.values),
        choices=[(Scope.ROUTE, "route"), (Scope.CONNECTOR, "connector")],
    )
    name = models.CharField(max_length=100, help_text="The route or connector name.")
    limit = models.PositiveIntegerField(help_text="Executions that may start per window.")
    window_seconds = models.PositiveIntegerField(default=60)
    runaway_per_hour = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Hard budget: more starts than this in an hour trips the kill switch of the "
        "route (routes only).",
    )

    class Meta:
        ordering = ["scope", "name"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "name"], name="guardrails_ratelimit_uniq"),
            models.CheckConstraint(
                condition=models.Q(limit__gte=1, window_seconds__gte=1),
                name="guardrails_ratelimit_positive",
            ),
        ]

    def __str__(self):
        return f"{self.scope} {self.name}: {self.limit} per {self.window_seconds}s"


class PayloadSchema(models.Model):
    """A JSON Schema the payloads of a source's events of a type must satisfy.

    Checked at ingest with the jsonschema library; a violation is a 400 naming the path of
    the offending field, and nothing is stored.
    """

    source = models.CharField(max_length=100, help_text="The source name.")
    event_type = models.CharField(
        max_length=255, help_text="An event type, or a pattern with * (order.*, or * for all)."
    )
    schema = models.JSONField(help_text="A JSON Schema (draft 2020-12).")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["source", "event_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "event_type"], name="guardrails_schema_uniq"
            ),
        ]

    def __str__(self):
        return f"{self.source}: {self.event_type}"

    def clean(self):

        problem = finite_json_problem(self.schema, root="(schema)")
        if problem:
            raise ValidationError({"schema": problem})
        try:
            jsonschema.Draft202012Validator.check_schema(self.schema)
        except jsonschema.SchemaError as exc:
            raise ValidationError({"schema": f"Not a valid JSON Schema: {exc.message}"}) from None


class AllowedHost(models.Model):
    """A host the http, webhook_forward and slack connectors may call (with OUTBOUND_HOSTS)."""

    pattern = models.CharField(
        max_length=255, unique=True, help_text="A host name, or *.example.com for its subdomains."
    )

    class Meta:
        ordering = ["pattern"]

    def __str__(self):
        return self.pattern


class AllowedCallable(models.Model):
    """A function the python connector may call (with PYTHON_CALLABLES)."""

    path = models.CharField(max_length=255, unique=True, help_text="Dotted path of the function.")

    class Meta:
        ordering = ["path"]

    def __str__(self):
        return self.path


class AllowedAction(models.Model):
    """A connector action routes may use. Once any is listed, routes using another are
    refused when saved, and their executions are blocked."""

    connector = models.CharField(max_length=64)
    action = models.CharField(max_length=64)

    class Meta:
        ordering = ["connector", "action"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "action"], name="guardrails_action_uniq"),
        ]

    def __str__(self):
        return f"{self.connector}.{self.action}"
