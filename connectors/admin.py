import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from connectors import registry
from connectors.models import CircuitBreaker, CircuitState, Route


def _connectors_help():
    rows = []
    for name, cls in sorted(registry.available().items()):
        rows.append((name, ", ".join(sorted(cls.actions)), cls.description))
    return format_html(
        "Connectors and their actions:<ul>{}</ul>",
        format_html_join("", "<li><b>{}</b>: {} — {}</li>", rows),
    )


class RouteForm(forms.ModelForm):
    connector = forms.ChoiceField(choices=())

    class Meta:
        model = Route
        fields = (
            "name",
            "event_type",
            "connector",
            "action",
            "params",
            "enabled",
            "dry_run",
            "max_attempts",
            "max_in_flight",
            "backoff_base_seconds",
            "backoff_cap_seconds",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["connector"].choices = [(n, n) for n in registry.names()]
        self.fields["connector"].help_text = _connectors_help()
        self.fields["params"].help_text = (
            "JSON object. Strings may use placeholders such as {{ event.data.order.id }} "
            "or {{ event.headers.x-request-id }}."
        )


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    list_display = (
        "name",
        "event_type",
        "connector",
        "action",
        "enabled",
        "dry_run",
        "max_attempts",
        "max_in_flight",
    )
    list_filter = ("enabled", "dry_run", "connector")
    search_fields = ("name", "event_type")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(admin.ModelAdmin):
    list_display = (
        "route",
        "target",
        "state_badge",
        "consecutive_failures",
        "retry_at",
        "updated_at",
    )
    list_filter = ("state", "route__connector")
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
        for circuit in CircuitBreaker.objects.exclude(state=CircuitState.CLOSED).select_related(
            "route"
        ):
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

    @admin.action(description="Close the circuit (let calls through again)")
    def close(self, request, queryset):
        from guardrails import audit

        n = queryset.exclude(state=CircuitState.CLOSED).update(
            state=CircuitState.CLOSED, consecutive_failures=0, retry_at=None
        )
        audit.record(
            actor=request.user,
            via="admin",
            action="circuit.close",
            target=json.dumps([str(c) for c in queryset])[:255],
            count=n,
        )
        self.message_user(request, f"{n} circuit(s) closed.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False
