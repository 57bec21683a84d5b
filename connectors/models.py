import hashlib
import json
import random
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.utils.functional import cached_property

from connectors import registry, templating
from connectors.base import value_at
from guardrails import killswitch
from guardrails.config import WatchedQuerySet
from guardrails.models import Scope
from guardrails.policy import action_decision
from lib import filters, sealing
from lib.patterns import finite_json_problem, type_matches

# Half of one default worker's slots (WORKER_CONCURRENCY=32): a route whose destination
# hangs leaves the other half to every other route.
DEFAULT_MAX_IN_FLIGHT = 16


class RouteQuerySet(WatchedQuerySet):
    # Cached per process by ingestion (events/sources/catalog.py): every change bumps the token.

    def enabled(self):
        return self.filter(enabled=True)

    def rename_source(self, old: str, new: str) -> int:
        """Routes listening to source `old` listen to `new` instead; how many changed."""
        changed = 0
        for route in self.all():
            if old in route.sources:
                route.sources = [new if name == old else name for name in route.sources]
                route.save(update_fields=["sources", "updated_at"])
                changed += 1
        return changed

    def matching(self, source: str, event_type: str, subject: dict) -> list["Route"]:
        """Enabled routes that take this event, in a stable order."""
        return [r for r in self.enabled().order_by("pk") if r.takes(source, event_type, subject)]


class InvalidRoute(ValueError):
    """A route that cannot be stored as it is (raised on save, fixtures included)."""


@dataclass(frozen=True)
class RouteCheck:
    """Whether a route takes an event, and if not at which step and why."""

    matched: bool
    step: str = ""  # disabled | type | source | filter, when not matched
    reasons: list = field(default_factory=list)


MAX_SOURCES = 100
# A rendered ordering key longer than this is stored as its SHA-256 (still one key each).
MAX_ORDERING_KEY = 200


class OnFailure(models.TextChoices):
    BLOCK = "block"
    """A dead-lettered execution holds back the rest of its key until an operator replays
    or cancels it."""
    SKIP = "skip"
    """A dead-lettered execution lets the rest of its key go on."""


class Route(models.Model):
    """Sends events of a type (from some sources, with some content) to a connector's action."""

    name = models.SlugField(max_length=100, unique=True)
    event_type = models.CharField(
        max_length=255,
        help_text="Event type, or a pattern with * wildcards, such as order.* or *.",
    )
    sources = models.JSONField(
        default=list,
        blank=True,
        help_text="The sources it listens to, by name. None: every source.",
    )
    filter = models.JSONField(
        default=dict,
        blank=True,
        help_text="Which events it takes by their content: data, headers, source and type "
        "(docs/routing.md). Empty: every event of its type from its sources.",
    )
    connector = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    dry_run = models.BooleanField(
        default=False, help_text="Describe what the action would do instead of doing it."
    )
    max_attempts = models.PositiveSmallIntegerField(default=8, validators=[MinValueValidator(1)])
    backoff_base_seconds = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0)],
        help_text="Retry n waits a random time up to min(cap, base * 2^(n-1)) (full jitter).",
    )
    backoff_cap_seconds = models.FloatField(
        default=600.0, validators=[MinValueValidator(0.0)], help_text="Longest wait between tries."
    )
    max_in_flight = models.PositiveIntegerField(
        default=DEFAULT_MAX_IN_FLIGHT,
        validators=[MinValueValidator(1)],
        help_text="At most this many of its executions run at once, over all workers, so "
        "one slow or hanging destination cannot take every worker's slots. Raise it for a "
        "busy route to a fast API (docs/engine.md).",
    )
    ordering_key = models.CharField(
        max_length=255,
        blank=True,
        help_text="Run its executions with the same key one at a time, in the order their "
        "events were received, for example {{ event.data.order.id }}. Empty, or a field "
        "the event lacks: unordered (docs/workflows.md).",
    )
    on_failure = models.CharField(
        max_length=max(len(v) for v in OnFailure.values),
        choices=OnFailure.choices,
        default=OnFailure.BLOCK,
        help_text="With an ordering key: what a failed (dead-lettered) or blocked execution "
        "does to the rest of its key. block: they wait until an operator replays or cancels "
        "it. skip: they go on.",
    )
    requires_approval = models.BooleanField(
        default=False,
        help_text="Its executions wait for an operator to approve them before they run "
        "(docs/workflows.md, Approval).",
    )
    approval_timeout = models.DurationField(
        null=True,
        blank=True,
        help_text="With requires_approval: an execution not approved within this long ends "
        "expired (for example 24:00:00). Empty: it waits until an operator acts.",
    )
    emit_type = models.CharField(
        max_length=255,
        blank=True,
        help_text="When its action succeeds, emit a follow-up event of this type (a "
        "template, such as invoice.created), stored from the internal source and routed "
        "like any event (docs/workflows.md). Empty: nothing is emitted.",
    )
    emit_payload = models.JSONField(
        default=dict,
        blank=True,
        help_text="The follow-up event's payload: JSON whose strings may use "
        "{{ event.… }}, {{ execution.… }} and {{ result.… }}, the action's result, such as "
        "{{ result.body.invoice.number }}.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RouteQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_attempts__gte=1), name="connectors_route_max_attempts_gte_1"
            ),
            models.CheckConstraint(
                condition=models.Q(backoff_base_seconds__gte=0, backoff_cap_seconds__gte=0),
                name="connectors_route_backoff_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(max_in_flight__gte=1),
                name="connectors_route_max_in_flight_gte_1",
            ),
            models.CheckConstraint(
                condition=models.Q(on_failure__in=OnFailure.values),
                name="connectors_route_on_failure_valid",
            ),
        ]

    def __str__(self):
        return f"{self.name}: {self.event_type} → {self.connector}.{self.action}"

    def matches(self, event_type: str) -> bool:
        return type_matches(self.event_type, event_type)

    def listens_to(self, source: str) -> bool:
        return not self.sources or source in self.sources

    @cached_property
    def compiled_filter(self) -> filters.Filter | None:
        # Routes are cached per process (events/sources/catalog.py): compiled once each.
        return filters.compile_filter(self.filter)

    def takes(self, source: str, event_type: str, subject: dict) -> bool:
        """Does this route take the event? `subject` is lib.filters.subject(...)."""
        if not (self.matches(event_type) and self.listens_to(source)):
            return False
        compiled = self.compiled_filter
        return compiled is None or compiled.matches(subject)

    def explain(self, source: str, event_type: str, subject: dict) -> RouteCheck:
        """Like takes(), saying which step refused the event and why (the route tester)."""
        if not self.enabled:
            return RouteCheck(False, "disabled", ["the route is disabled"])
        if not self.matches(event_type):
            return RouteCheck(
                False, "type", [f"{event_type!r} does not match the route's {self.event_type!r}"]
            )
        if not self.listens_to(source):
            listened = ", ".join(self.sources)
            return RouteCheck(
                False, "source", [f"{source!r} is not among its sources: {listened}"]
            )
        try:
            compiled = filters.compile_filter(self.filter)
        except filters.FilterError as exc:  # changed behind the models' back: takes nothing
            return RouteCheck(False, "filter", [f"its stored filter cannot be read: {exc}"])
        reasons = compiled.explain(subject) if compiled is not None else []
        return RouteCheck(not reasons, "filter" if reasons else "", reasons)

    def approval_deadline(self, now):
        """When an execution created (or replayed) at `now` expires unapproved, or None."""
        return now + self.approval_timeout if self.approval_timeout else None

    def key_for(self, scope: dict) -> str:
        """The ordering key of an event's execution: the rendered template as text ("" for
        a route without one, or when the event lacks the field: unordered). `scope` is
        templating.event_namespace(...)."""
        if not self.ordering_key:
            return ""
        try:
            value = templating.render_string(self.ordering_key, scope)
        except templating.MissingField:
            return ""
        if value is None:
            return ""
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > MAX_ORDERING_KEY:
            return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        return text

    def retry_delay(self, attempt: int, *, rng=random) -> float:
        """Seconds to wait after failed try number `attempt` (1-based): full jitter."""
        ceiling = min(
            self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** min(attempt - 1, 60)
        )
        return rng.uniform(0, ceiling)

    def clean(self):
        problem = finite_json_problem(self.params, root="(parameters)")
        if problem:
            raise ValidationError({"params": problem})
        self.clean_scope()
        try:
            connector = registry.get(self.connector)
        except registry.UnknownConnector as exc:
            raise ValidationError({"connector": str(exc)}) from None
        try:
            connector.validate(self.action, self.params)
            templating.check_syntax(self.params)
        except ValueError as exc:
            raise ValidationError({"action": str(exc)}) from None
        if self.plain_secrets(connector) and not sealing.available():
            raise ValidationError(
                {"action": "Set SECRET_KEY first: secret parameters are stored encrypted with it."}
            )

        decision = action_decision(self.connector, self.action)
        if not decision.allowed:
            raise ValidationError({"action": decision.reason})

    def check_shape(self) -> None:
        """Raise InvalidRoute if its sources or filter cannot be used. Run on every save
        (fixtures loaded with loaddata too), so no route the runtime cannot read is stored."""
        if self.sources is None:  # JSON null: the column's "none" is the empty list
            self.sources = []
        if self.filter is None:
            self.filter = {}
        if not isinstance(self.sources, list) or not all(
            isinstance(name, str) and name for name in self.sources
        ):
            raise InvalidRoute("sources: a list of source names")
        if len(self.sources) > MAX_SOURCES:
            raise InvalidRoute(f"sources: at most {MAX_SOURCES} names")
        try:
            filters.check(self.filter)
        except filters.FilterError as exc:
            raise InvalidRoute(f"filter: {exc}") from None
        try:
            templating.check_event_template(self.ordering_key or "")
        except ValueError as exc:
            raise InvalidRoute(f"ordering_key: {exc}") from None
        if self.on_failure not in OnFailure.values:
            raise InvalidRoute(f"on_failure: one of {', '.join(OnFailure.values)}")
        if self.emit_payload is None:
            self.emit_payload = {}
        try:
            templating.check_syntax(self.emit_type or "", roots=templating.EMIT_ROOTS)
            templating.check_syntax(self.emit_payload, roots=templating.EMIT_ROOTS)
        except ValueError as exc:
            raise InvalidRoute(f"emit_type: {exc}") from None
        problem = finite_json_problem(self.emit_payload, root="(follow-up payload)")
        if problem:
            raise InvalidRoute(f"emit_payload: {problem}")
        if self.emit_payload and not self.emit_type:
            raise InvalidRoute("emit_type: give the follow-up event a type, or empty its payload")
        if self.approval_timeout is not None and self.approval_timeout.total_seconds() <= 0:
            raise InvalidRoute("approval_timeout: a positive duration, or empty for none")

    def clean_scope(self) -> None:
        """The form's check of sources and filter: each message on its own field."""
        try:
            self.check_shape()
        except InvalidRoute as exc:
            name, _, problem = str(exc).partition(": ")
            raise ValidationError({name: problem}) from None
        known = killswitch.known_names(Scope.SOURCE)
        unknown = [name for name in self.sources if name not in known]
        if unknown:
            listed = ", ".join(known) or "none yet"
            raise ValidationError(
                {"sources": f"No source is named {', '.join(unknown)}; the sources are: {listed}."}
            )

    def plain_secrets(self, connector=None) -> list[tuple]:
        """Paths of the secret parameters still held in plain (not yet sealed)."""
        connector = connector or registry.get(self.connector)
        if not isinstance(self.params, dict):
            return []
        return [
            path
            for path in connector.secret_params(self.action, self.params)
            if isinstance(value_at(self.params, path), str)
        ]

    def seal_secrets(self) -> None:
        """Replace plain secret parameters by their sealed markers (before every save)."""
        try:
            connector = registry.get(self.connector)
        except registry.UnknownConnector:
            return
        self.params = connector.seal_secrets(self.action, self.params)


@receiver(pre_save, sender=Route, dispatch_uid="connectors.route.seal-secrets")
def _seal_route_secrets(sender, instance, raw, **kwargs):
    # Also for raw saves: a fixture with a plain secret is stored sealed, and reads the same,
    # and a fixture with a filter that cannot be read is refused, naming the bad part.
    try:
        instance.check_shape()
    except InvalidRoute as exc:
        raise InvalidRoute(f"Route {instance.name!r}: {exc}") from None
    instance.seal_secrets()


class CircuitState(models.TextChoices):
    CLOSED = "closed"
    """Calls go through."""
    OPEN = "open"
    """Too many failures in a row: calls wait until the cool-down ends."""
    HALF_OPEN = "half_open"
    """The cool-down ended: one probe call is let through to test the target."""


# Worst first: what a route with several circuits (one per target) is shown as.
CIRCUIT_SEVERITY = [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


class CircuitBreakerQuerySet(models.QuerySet):
    def not_closed(self):
        """Circuits that stop calls (open) or let one probe through (half open); a partial
        index holds exactly these."""
        return self.exclude(state=CircuitState.CLOSED)

    def worst_by_route(self) -> dict[int, str]:
        """{route id: the worst state of its circuits} (CIRCUIT_SEVERITY) for the routes in
        this queryset's rows with a circuit not closed; a route missing has every circuit
        closed, or none yet. Reads the partial index of circuits not closed."""
        worst: dict[int, str] = {}
        for route_id, state in self.not_closed().order_by().values_list("route_id", "state"):
            shown = worst.get(route_id, CircuitState.CLOSED)
            if CIRCUIT_SEVERITY.index(state) < CIRCUIT_SEVERITY.index(shown):
                worst[route_id] = state
        return worst


class CircuitBreaker(models.Model):
    """One per route and target host. Executions that meet an open circuit are deferred
    without spending an attempt. Keyed by route, so one failing endpoint on a host does
    not stop other routes that call the same host."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="circuits")
    target = models.CharField(max_length=255)
    state = models.CharField(
        max_length=max(len(v) for v in CircuitState.values),
        choices=CircuitState.choices,
        default=CircuitState.CLOSED,
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="When an open circuit lets a probe through."
    )
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CircuitBreakerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["route", "target"], name="connectors_circuit_uniq"),
        ]
        indexes = [
            # Every admin page's header counts these (events/observe/dashboard.py).
            models.Index(
                fields=["route", "target"],
                name="connectors_circuit_open_idx",
                condition=~models.Q(state=CircuitState.CLOSED),
            )
        ]
        ordering = ["route", "target"]
        verbose_name = "connector and circuit breaker"
        verbose_name_plural = "connectors and circuit breakers"

    def __str__(self):
        return f"{self.route.name} → {self.target}: {self.state}"
