import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class Mode(models.TextChoices):
    RUNNING = "running"
    """Events are accepted and executed."""
    KILLED = "killed"
    """The kill switch is engaged: events are stored and held, nothing new is executed."""
    DRY_RUN = "dry_run"
    """Connectors describe what they would do instead of doing it."""


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

    @classmethod
    def current(cls) -> "RuntimeState":
        """The state row, created as `running` the first time it is read."""
        state = cls.objects.filter(pk=cls.SINGLETON_ID).first()
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
