import json

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from unfold.admin import ModelAdmin
from unfold.widgets import UnfoldAdminCheckboxSelectMultipleWidget, UnfoldAdminSelectWidget

from connectors import circuits, registry
from connectors.base import hint_of, is_sealed, path_text, sealed_in, value_at, with_value_at
from connectors.models import CircuitBreaker, CircuitState, Route
from guardrails import killswitch
from guardrails.models import Scope
from guardrails.permissions import may_operate


def _connectors_help():
    rows = []
    for name, cls in sorted(registry.available().items()):
        rows.append((name, ", ".join(sorted(cls.actions)), cls.description))
    return format_html(
        "Connectors and their actions:<ul>{}</ul>",
        format_html_join("", "<li><b>{}</b>: {} — {}</li>", rows),
    )


class RouteForm(forms.ModelForm):
    connector = forms.ChoiceField(choices=(), widget=UnfoldAdminSelectWidget)
    sources = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=UnfoldAdminCheckboxSelectMultipleWidget,
        help_text="The sources it listens to. None ticked: every source.",
    )

    class Meta:
        model = Route
        fields = (
            "name",
            "event_type",
            "sources",
            "filter",
            "connector",
            "action",
            "params",
            "enabled",
            "dry_run",
            "max_attempts",
            "max_in_flight",
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "ordering_key",
            "on_failure",
            "requires_approval",
            "approval_timeout",
        )

    # What a stored secret looks like in the parameters editor: a hint, never the value.
    MASK = "••••"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A read-only form (viewers, operators) has none of these fields.
        if "connector" in self.fields:
            self.fields["connector"].choices = [(n, n) for n in registry.names()]
            self.fields["connector"].help_text = _connectors_help()
        if "sources" in self.fields:
            # A name no source has any more stays listed (and ticked) until it is unticked.
            names = sorted({*killswitch.known_names(Scope.SOURCE), *(self.instance.sources or [])})
            self.fields["sources"].choices = [(name, name) for name in names]
        if "filter" in self.fields:
            self.fields["filter"].help_text = format_html(
                "JSON, matched against <code>data</code> (the payload), <code>headers</code>, "
                "<code>source</code> and <code>type</code>, for example "
                "<code>{}</code>. Operators: $eq $neq $gt $gte $lt $lte $in $nin $exist "
                "$startsWith $endsWith $or $and $not. Empty: every event of its type and "
                'sources. See docs/routing.md, and try it with the <a href="{}">route tester</a>.',
                '{"data": {"ref": "refs/heads/main"}}',
                reverse("admin:events_event_route_test"),
            )
        if "params" in self.fields:
            self.fields["params"].help_text = (
                "JSON object. Strings may use placeholders such as {{ event.data.order.id }} "
                "or {{ event.headers.x-request-id }}. Secrets (webhook_forward's secret, "
                "credential headers) are stored encrypted and shown masked: leave the mask "
                "to keep the stored secret, or type a new value to replace it."
            )
            stored = self._stored_secrets()
            if stored:
                params = self.initial.get("params", self.instance.params)
                for path, value in stored.items():
                    params = with_value_at(params, path, self._mask(value))
                self.initial["params"] = params

    @classmethod
    def _mask(cls, stored) -> str:
        if is_sealed(stored):
            return f"{stored.get('hint', '')}…{cls.MASK} (stored encrypted)"
        return f"{hint_of(stored)}…{cls.MASK} (stored in plain; encrypted when saved)"

    def _stored_secrets(self) -> dict:
        """Path -> stored value of each secret of the saved route: its sealed markers, and
        plain values where the connector expects a secret (a route saved before sealing)."""
        params = self.instance.params if self.instance.pk else None
        if not isinstance(params, dict):
            return {}
        found = dict(sealed_in(params))
        try:
            connector = registry.get(self.instance.connector)
        except registry.UnknownConnector:
            return found
        for path in connector.secret_params(self.instance.action, params):
            if isinstance(value_at(params, path), str):
                found[path] = value_at(params, path)
        return found

    def clean_filter(self):
        # An emptied editor means no filter, stored as {} (the column is not nullable).
        return self.cleaned_data.get("filter") or {}

    def clean_params(self):
        """The mask of a stored secret, where it was shown, keeps that secret; anything
        typed there replaces it. A mask moved elsewhere or a sealed value typed in is
        refused: the editor never takes ciphertext or a mask for a secret."""
        params = self.cleaned_data.get("params")
        stored = self._stored_secrets()
        for path, value in stored.items():
            if value_at(params, path) == self._mask(value):
                params = with_value_at(params, path, value)
        for path, value in self._leaves(params):
            if is_sealed(value) and stored.get(path) != value:
                raise forms.ValidationError(
                    f"{path_text(path)}: type the secret itself; a sealed value cannot be "
                    "entered here."
                )
            if isinstance(value, str) and self.MASK in value and stored.get(path) != value:
                raise forms.ValidationError(
                    f"{path_text(path)}: this is the mask of a stored secret, not a value; "
                    "type the secret again."
                )
        return params

    @classmethod
    def _leaves(cls, value, path=()):
        if is_sealed(value) or not isinstance(value, dict | list):
            yield path, value
            return
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from cls._leaves(item, (*path, key))


class RouteAdmin(ModelAdmin):
    """The route's form, its own columns and its read-only page. Registered by
    `events.admin.routes`, whose subclass adds the columns that need the executions (a
    connector imports no events module): the routes list is a triage list."""

    form = RouteForm
    list_display = ("name", "takes", "sends_to", "enabled", "dry_run")
    list_filter = ("enabled", "dry_run", "connector")
    search_fields = ("name", "event_type")

    # Room for the triage columns in 1400 px: longer values are cut, and whole in the title.
    SHOWN_CHARS = 28

    @classmethod
    def _cut(cls, text: str, tag: str = "span"):
        shown = text[: cls.SHOWN_CHARS] + ("…" if len(text) > cls.SHOWN_CHARS else "")
        return format_html('<{} title="{}">{}</{}>', tag, text, shown, tag)

    @admin.display(description="takes", ordering="event_type")
    def takes(self, obj):
        """Which events it takes, a line each: the type, the sources, the filter."""
        sources = ", ".join(obj.sources) if obj.sources else "every source"
        lines = [
            format_html("<div>{}</div>", obj.event_type),
            format_html('<div class="route-quiet">from {}</div>', self._cut(sources)),
        ]
        if obj.filter:
            text = json.dumps(obj.filter, ensure_ascii=False, sort_keys=True)
            lines.append(format_html("<div>{}</div>", self._cut(text, "code")))
        return format_html_join("", "{}", ((line,) for line in lines))

    @admin.display(description="sends to", ordering="connector")
    def sends_to(self, obj):
        """The target host its calls go to, over its connector and action."""
        return format_html(
            '<div>{}</div><div class="route-quiet">{}.{}</div>',
            self.target_host(obj),
            obj.connector,
            obj.action,
        )

    @staticmethod
    def target_host(obj) -> str:
        """Where its calls go, as its circuits are keyed: the host of a URL, never its
        path, query or a secret. "—" for a connector with no target or one that cannot
        be worked out (an unknown connector, parameters it cannot read)."""
        try:
            target = registry.get(obj.connector).target(obj.action, obj.params)
        except Exception:  # any connector's bug or odd params: the list still opens
            target = ""
        return target if target and isinstance(target, str) else "—"

    def get_fields(self, request, obj=None):
        # Read-only pages render params from the model, sealed markers and all: show the
        # editor's masked copy instead.
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            return [("masked_params" if name == "params" else name) for name in fields]
        return fields

    @admin.display(description="Params")
    def masked_params(self, obj):
        masked = RouteForm(instance=obj).initial.get("params", obj.params)
        return format_html("<pre>{}</pre>", json.dumps(masked, indent=2, ensure_ascii=False))


class CircuitStateFilter(admin.SimpleListFilter):
    """The circuits' states, and "not closed": the open and half-open ones an operator
    looks at (every admin page's header links here)."""

    title = "state"
    parameter_name = "state"
    NOT_CLOSED = "not_closed"

    def lookups(self, request, model_admin):
        return [(self.NOT_CLOSED, "not closed"), *CircuitState.choices]

    def queryset(self, request, queryset):
        if self.value() == self.NOT_CLOSED:
            return queryset.not_closed()
        if self.value() in CircuitState.values:
            return queryset.filter(state=self.value())
        return queryset


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(ModelAdmin):
    list_display = (
        "route",
        "target",
        "state_badge",
        "consecutive_failures",
        "retry_at",
        "updated_at",
    )
    list_filter = (CircuitStateFilter, "route", "route__connector")
    list_select_related = ("route",)
    readonly_fields = (
        "route",
        "target",
        "state",
        "consecutive_failures",
        "opened_at",
        "retry_at",
        "last_error",
        "updated_at",
    )
    actions = ["close"]

    def changelist_view(self, request, extra_context=None):
        # Every connector with its actions, beside the circuits of its targets.
        open_circuits = {}
        for circuit in CircuitBreaker.objects.not_closed().select_related("route"):
            open_circuits.setdefault(circuit.route.connector, []).append(circuit)
        connectors = [
            {
                "name": name,
                "actions": sorted(cls.actions),
                "description": cls.description,
                "circuits": open_circuits.get(name, []),
            }
            for name, cls in sorted(registry.available().items())
        ]
        return super().changelist_view(
            request, {**(extra_context or {}), "connectors": connectors}
        )

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        colour = {"closed": "#2e7d32", "open": "#c62828", "half_open": "#ef6c00"}[obj.state]
        return format_html('<b style="color:{}">{}</b>', colour, obj.get_state_display())

    def has_operate_permission(self, request):
        return may_operate(request.user)

    @admin.action(
        description="Close the circuit (let calls through again)", permissions=["operate"]
    )
    def close(self, request, queryset):
        n = circuits.close(queryset, actor=request.user, via="admin")
        self.message_user(request, f"{n} circuit(s) closed.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False
