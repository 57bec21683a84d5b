"""Events, their executions and attempts: the big tables."""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from unfold.admin import TabularInline
from unfold.widgets import UnfoldAdminTextareaWidget, UnfoldAdminTextInputWidget

from events.admin import acts, base
from events.admin.base import BigTableAdmin, ExecutionTypeFilter, TypeFilter
from events.intake import routing
from events.models import (
    Attempt,
    BulkAction,
    BulkOperation,
    Event,
    Execution,
    ExecutionStatus,
    payload_field_term,
)
from events.observe import chains as event_chains
from events.observe import timeline as execution_timeline
from events.operate import bulk, operations
from lib.admin import pretty_json


def _execution_ids(term: str, prefixed: list) -> list[int]:
    """Executions of the events with this event id, of `prefixed` (the events whose event
    id starts with it) or with this payload field (`order.id=123`), or with this
    idempotency key or id."""
    ids = set(Execution.objects.filter(event__event_id=term).values_list("pk", flat=True)[:1000])
    if prefixed:
        of_prefixed = Execution.objects.filter(event__in=prefixed)
        ids.update(of_prefixed.values_list("pk", flat=True)[:1000])
    field = payload_field_term(term)
    if field is not None:
        events = Event.objects.with_payload_field(*field).values("pk")
        ids.update(Execution.objects.filter(event__in=events).values_list("pk", flat=True)[:1000])
    ids.update(Execution.objects.filter(idempotency_key=term).values_list("pk", flat=True))
    if term.isdigit() and len(term) < 18:
        ids.add(int(term))
    return sorted(ids)


class ExecutionInline(TabularInline):
    model = Execution
    extra = 0
    can_delete = False
    fields = ("route", "status", "attempts", "status_reason", "last_error", "finished_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("route")


EVENT_ACTS = {"replay-failed": "Replay failed", "route-again": "Route again"}


class RouteTestForm(forms.Form):
    """The route tester's question: a stored event, or one described by hand."""

    event = forms.CharField(
        required=False,
        label="Event",
        widget=UnfoldAdminTextInputWidget,
        help_text="Its id (UUID), <source>/<event id>, or the event id alone.",
    )
    source = forms.CharField(
        required=False,
        widget=UnfoldAdminTextInputWidget,
        help_text="The source it comes from, by name.",
    )
    type = forms.CharField(required=False, label="Event type", widget=UnfoldAdminTextInputWidget)
    body = forms.CharField(
        required=False,
        label="JSON body",
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 8, "spellcheck": "false"}),
        help_text="The payload, as the filter sees it under data.",
    )
    headers = forms.CharField(
        required=False,
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 4, "spellcheck": "false"}),
        help_text="One per line, Name: value. Filters see them lowercased under headers.",
    )

    def clean(self):
        data = super().clean()
        if data.get("event"):
            try:
                data["found"] = routing.find_event(data["event"])
            except LookupError as exc:
                self.add_error("event", str(exc))
            return data
        if not data.get("source") or not data.get("type"):
            raise forms.ValidationError(
                "Name a stored event, or give a source, an event type and a JSON body."
            )
        try:
            data["payload"] = json.loads(data.get("body") or "{}")
        except ValueError as exc:
            self.add_error("body", f"This is not JSON: {exc}")
        try:
            data["header_dict"] = routing.parse_headers((data.get("headers") or "").splitlines())
        except ValueError as exc:
            self.add_error("headers", str(exc))
        return data

    def verdicts(self):
        data = self.cleaned_data
        if data.get("found") is not None:
            return routing.explain_event(data["found"])
        return routing.explain(
            source=data["source"],
            event_type=data["type"],
            payload=data["payload"],
            headers=data["header_dict"],
        )


def render_verdicts(verdicts, *, stored: bool) -> str:
    return render_to_string(
        "admin/events/event/verdicts.html", {"verdicts": verdicts, "stored": stored}
    )


@admin.register(Event)
class EventAdmin(BigTableAdmin):
    list_display = (
        "event_id_cell",
        "source_cell",
        "type_cell",
        base.status_label,
        base.delivery_label,
        "received_at",
        "conflicts",
    )
    list_filter = (
        "source",
        TypeFilter,
        "status",
        base.DeliveryFilter,
        ("received_at", admin.DateFieldListFilter),
    )
    list_select_related = ("source",)
    search_fields = ("=event_id",)
    ordering = ("-received_at",)
    inlines = [ExecutionInline]
    actions = ["route_again"]
    fields = (
        "id",
        "source",
        "event_id",
        "type",
        "status",
        "status_reason",
        "received_at",
        "body_hash",
        "conflicts",
        "payload_pretty",
        "headers_pretty",
        "chain",
        "routes",
    )
    readonly_fields = fields

    search_help_text = base.EVENT_ID_HELP + ", or a payload field: order.id=123."

    def get_changelist(self, request, **kwargs):
        return base.DeliveryChangeList

    # One line per cell, so the list fits a 1400 px window whatever the ids look like.
    @admin.display(description="event id", ordering="event_id")
    def event_id_cell(self, obj):
        return base.clipped(obj.event_id, 13)

    @admin.display(description="source", ordering="source")
    def source_cell(self, obj):
        return base.clipped(obj.source.name, 7)

    @admin.display(description="type", ordering="type")
    def type_cell(self, obj):
        return base.clipped(obj.type, 10)

    def indexed_search(self, term, prefixed):
        match = Q(event_id=term)
        if prefixed:
            match |= Q(pk__in=prefixed)
        field = payload_field_term(term)
        if field is not None:
            match |= Q(pk__in=Event.objects.with_payload_field(*field).values("pk"))
        return match

    def get_urls(self):
        tester = path(
            "route-test/",
            self.admin_site.admin_view(self.route_test_view),
            name="events_event_route_test",
        )
        own = [
            path(
                f"<path:object_id>/{act}/",
                self.admin_site.admin_view(self.act_view),
                {"act": act},
                name=f"events_event_{act.replace('-', '_')}",
            )
            for act in EVENT_ACTS
        ]
        return [tester, *own, *super().get_urls()]

    def act_view(self, request, object_id, act):
        """Replay failed, or Route again, from the event's page: a reason first."""
        event = self.get_object(request, object_id)
        if event is None:
            raise Http404
        if not self.has_operate_permission(request):
            raise PermissionDenied
        page = reverse("admin:events_event_change", args=[event.pk])
        if act == "replay-failed":
            failed = event.executions.filter(status=ExecutionStatus.FAILED)
            executions = self.admin_site.get_model_admin(Execution)
            answer = executions._ask_then_apply(request, failed, BulkAction.REPLAY)
            return answer if answer is not None else HttpResponseRedirect(page)
        answer = self._route_again(request, Event.objects.filter(pk=event.pk), what=str(event))
        return answer if answer is not None else HttpResponseRedirect(page)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        event = self.get_object(request, object_id)
        offered = []
        if event is not None and self.has_operate_permission(request):
            offered = [
                {
                    "slug": act,
                    "label": label,
                    "url": reverse(f"admin:events_event_{act.replace('-', '_')}", args=[event.pk]),
                }
                for act, label in EVENT_ACTS.items()
            ]
        extra = {**(extra_context or {}), "acts": offered}
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def route_test_view(self, request):
        """The route tester: what every route makes of an event. Changes nothing."""
        if not (
            request.user.has_perm("events.view_event")
            and request.user.has_perm("connectors.view_route")
        ):
            raise PermissionDenied
        if request.method == "POST":
            form = RouteTestForm(request.POST)
        elif "event" in request.GET:
            form = RouteTestForm({"event": request.GET["event"]})
        else:
            form = RouteTestForm()
        verdicts = event = None
        if form.is_bound and form.is_valid():
            verdicts = form.verdicts()
            event = form.cleaned_data.get("found")
        return TemplateResponse(
            request,
            "admin/events/event/route_test.html",
            {
                **self.admin_site.each_context(request),
                "title": "Route tester",
                "opts": self.model._meta,
                "form": form,
                "verdicts": verdicts,
                "matched": sum(v.matched for v in verdicts or ()),
                "event": event,
            },
        )

    @admin.display(description="chain")
    def chain(self, obj):
        """The chain of steps this event is part of, as a tree (events.observe.chains)."""
        if obj is None or obj.pk is None:
            return "—"
        root, cut = event_chains.tree(obj)
        if root is None:
            return "— (not part of a chain)"
        return render_to_string(
            "admin/events/event/chain.html",
            {"root": root, "cut": cut, "nodes": event_chains.NODES},
        )

    @admin.display(description="routes")
    def routes(self, obj):
        """Every route, matched or not and why, beside what was decided on arrival."""
        if obj is None or obj.pk is None:
            return "—"
        verdicts = routing.explain_event(obj)
        if obj.matched_routes is None:
            arrival = "This event arrived before routes were recorded with events."
        else:
            arrival = f"It matched {len(obj.matched_routes)} route(s) when it arrived."
        tester = reverse("admin:events_event_route_test") + f"?event={obj.pk}"
        return format_html(
            '<div class="runtime-page"><p>{} Below, as the routes are now. '
            '<a href="{}">Open in the route tester</a>.</p>{}</div>',
            arrival,
            tester,
            render_verdicts(verdicts, stored=True),
        )

    @admin.action(
        description="Route again (create executions for routes added since)…",
        permissions=["operate"],
    )
    def route_again(self, request, queryset):
        return self._route_again(
            request, queryset, selection=acts.list_selection(request), action="route_again"
        )

    def _route_again(self, request, queryset, *, what="the selected events", **carried):
        """Ask for a reason, then route the events again; None once done."""
        form = acts.ReasonForm(request.POST if request.POST.get("confirm") == "yes" else None)
        if form.is_bound and form.is_valid():
            reason = form.cleaned_data["reason"]
            created = operations.replay_events(
                queryset, actor=request.user, via="admin", reason=reason
            )
            self.message_user(
                request, f"Route again: {created} new execution(s) queued. Reason: {reason}"
            )
            return None
        lines = [
            f"Checks {what} against the routes of now (type, sources, filter) and creates an "
            "execution for each route that takes one and has none yet."
        ]
        return acts.confirm_page(
            self, request, title="Route again", lines=lines, form=form, **carried
        )

    @admin.display(description="payload")
    def payload_pretty(self, obj):
        return pretty_json(obj.payload)

    @admin.display(description="headers (secrets redacted)")
    def headers_pretty(self, obj):
        return pretty_json(obj.headers)


@admin.register(Execution)
class ExecutionAdmin(BigTableAdmin):
    list_display = (
        "id",
        "event_cell",
        "route_cell",
        base.status_label,
        "attempts_of_max",
        "last_error_short",
        "created_at",
    )
    list_filter = (
        "status",
        "route",
        ("event__source", admin.RelatedFieldListFilter),
        ExecutionTypeFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("event__source", "route")
    search_fields = ("=event__event_id", "=idempotency_key")
    search_help_text = base.EVENT_ID_HELP + (
        ", an exact idempotency key or execution id, or a payload field: order.id=123."
    )
    ordering = ("-created_at",)
    actions = ["approve", "reject", "release_held", "replay", "cancel"]
    readonly_fields = (
        "event",
        "route",
        "status",
        "status_reason",
        "key_line",
        "attempts",
        "total_attempts",
        "idempotency_key",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "lease_owner",
        "lease_expires_at",
        "finished_at",
        "expires_at",
        "last_error",
        "timeline",
    )
    fields = readonly_fields

    def indexed_search(self, term, prefixed):
        return Q(pk__in=_execution_ids(term, prefixed))

    # One line per cell, so the list fits a 1400 px window (tests/admin/test_browser.py).
    @admin.display(description="event", ordering="event")
    def event_cell(self, obj):
        return base.clipped(obj.event.event_id, 10, title=str(obj.event))

    @admin.display(description="route", ordering="route")
    def route_cell(self, obj):
        return base.clipped(obj.route.name, 8, title=str(obj.route))

    @admin.display(description="attempts")
    def attempts_of_max(self, obj):
        """Attempts made of the route's most, and when the next one is due if it waits."""
        made = f"{obj.attempts} / {obj.route.max_attempts}"
        if obj.status not in (ExecutionStatus.QUEUED, ExecutionStatus.RETRYING):
            return made
        due = base.relative(obj.next_attempt_at)
        return format_html('{}<span class="runtime-quiet">next {}</span>', made, due)

    @admin.display(description="last error")
    def last_error_short(self, obj):
        text = obj.last_error.strip().splitlines()[0] if obj.last_error.strip() else ""
        return base.clipped(Truncator(text).chars(200), 15, title=obj.last_error, lines=2)

    @admin.display(description="ordering key")
    def key_line(self, obj):
        """Its key, and which execution it waits behind (or that it is at the head)."""
        if obj is None or not obj.ordering_key:
            return "— (unordered)"
        holder = obj.holder()
        if holder is None:
            return format_html("<code>{}</code>: next in line", obj.ordering_key)
        return format_html(
            '<code>{}</code>: waiting behind <a href="{}">execution {}</a> ({})',
            obj.ordering_key,
            reverse("admin:events_execution_change", args=[holder.pk]),
            holder.pk,
            holder.status,
        )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("event__source", "route")

    @admin.display(description="timeline")
    def timeline(self, obj):
        """Creation, each attempt (the wait before it, what it sent and got back) and the
        operators' acts, oldest first: events.observe.timeline."""
        if obj is None or obj.pk is None:
            return "—"
        return render_to_string(
            "admin/events/execution/timeline.html",
            {
                "entries": execution_timeline.timeline(obj),
                "more": obj.total_attempts > execution_timeline.ATTEMPTS_SHOWN,
            },
        )

    @staticmethod
    def _selection(request) -> str:
        if request.POST.get("select_across") in ("1", "True", "true", "on"):
            filters = request.GET.urlencode()
            return f"all matching {filters}" if filters else "all executions"
        return f"{len(request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))} selected"

    def _apply(self, request, queryset, action, *, force=False, reason=""):
        """Run inline or hand to a worker (bulk.apply decides); report either way."""
        verb, _, done = acts.VERBS[action]
        try:
            result = bulk.apply(
                queryset,
                action,
                actor=request.user,
                via="admin",
                force=force,
                selection=self._selection(request),
                reason=reason,
            )
        except bulk.TooMany as exc:
            self.message_user(request, f"Nothing done: {exc}.", messages.ERROR)
            return None
        if isinstance(result, BulkOperation):
            self.message_user(
                request,
                f"{result.total:,} execution(s) to {action}: a worker does it in the "
                "background; this page shows its progress.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                reverse("admin:events_bulkoperation_change", args=[result.pk])
            )
        self.message_user(request, f"{verb}: {result} execution(s) {done}. Reason: {reason}")
        return None

    def _ask_then_apply(self, request, queryset, action, *, selection=None, admin_action=""):
        """The confirmation page (what it will do, the reason), then the act."""
        plan = bulk.plan(queryset, action)
        bound = request.POST if request.POST.get("confirm") == "yes" else None
        form = acts.ReasonForm(bound, needs_again=plan.succeeded > 0)
        if form.is_bound and form.is_valid():
            return self._apply(
                request,
                queryset,
                action,
                force=form.cleaned_data.get("again", False),
                reason=form.cleaned_data["reason"],
            )
        verb = acts.VERBS[action][0]
        return acts.confirm_page(
            self,
            request,
            title=f"{verb} {plan.eligible:,} execution(s)",
            lines=acts.plan_lines(plan),
            form=form,
            selection=selection,
            action=admin_action,
        )

    def _list_act(self, request, queryset, action, admin_action: str):
        selection = acts.list_selection(request)
        return self._ask_then_apply(
            request, queryset, action, selection=selection, admin_action=admin_action
        )

    @admin.action(description="Approve (awaiting approval)…", permissions=["operate"])
    def approve(self, request, queryset):
        return self._list_act(request, queryset, BulkAction.APPROVE, "approve")

    @admin.action(description="Reject (awaiting approval)…", permissions=["operate"])
    def reject(self, request, queryset):
        return self._list_act(request, queryset, BulkAction.REJECT, "reject")

    @admin.action(description="Release held executions…", permissions=["operate"])
    def release_held(self, request, queryset):
        return self._list_act(request, queryset, BulkAction.RELEASE, "release_held")

    @admin.action(description="Replay (same idempotency key)…", permissions=["operate"])
    def replay(self, request, queryset):
        return self._list_act(request, queryset, BulkAction.REPLAY, "replay")

    @admin.action(description="Cancel (queued, retrying or held)…", permissions=["operate"])
    def cancel(self, request, queryset):
        return self._list_act(request, queryset, BulkAction.CANCEL, "cancel")

    # -- the same acts on one execution's page ----------------------------------------

    def get_urls(self):
        own = [
            path(
                f"<path:object_id>/{act}/",
                self.admin_site.admin_view(self.act_view),
                {"act": act},
                name=f"events_execution_{act}",
            )
            for act in acts.VERBS
        ]
        everything_held = path(
            "release-held/",
            self.admin_site.admin_view(self.release_all_held_view),
            name="events_execution_release_all_held",
        )
        return [everything_held, *own, *super().get_urls()]

    def release_all_held_view(self, request):
        """Release every held execution: what the dashboard offers once the kill switch is
        released. The same page as any act: the count, a reason, then the release."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        answer = self._ask_then_apply(request, Execution.objects.held(), BulkAction.RELEASE)
        if answer is None:
            return HttpResponseRedirect(reverse("admin:index"))
        return answer

    def act_view(self, request, object_id, act):
        execution = self.get_object(request, object_id)
        if execution is None or act not in acts.VERBS:
            raise Http404
        if not self.has_operate_permission(request):
            raise PermissionDenied
        page = reverse("admin:events_execution_change", args=[execution.pk])
        answer = self._ask_then_apply(request, Execution.objects.filter(pk=execution.pk), act)
        return answer if answer is not None else HttpResponseRedirect(page)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        execution = self.get_object(request, object_id)
        offered = []
        if execution is not None and self.has_operate_permission(request):
            offered = [
                {
                    "slug": act,
                    "label": acts.VERBS[act][0],
                    "url": reverse(f"admin:events_execution_{act}", args=[execution.pk]),
                }
                for act in acts.one_row_acts(execution)
            ]
        extra = {**(extra_context or {}), "acts": offered}
        return super().change_view(request, object_id, form_url, extra_context=extra)


@admin.register(Attempt)
class AttemptAdmin(BigTableAdmin):
    """Every try of every execution, newest first; read-only."""

    list_display = (
        "id",
        "execution",
        "number",
        "route",
        base.outcome_label,
        "error_cell",
        "started_at",
        "duration",
        "worker_cell",
    )
    list_filter = (
        "outcome",
        ("execution__route", admin.RelatedFieldListFilter),
        ("started_at", admin.DateFieldListFilter),
    )
    list_select_related = ("execution__route",)
    search_fields = ("=execution__event__event_id",)
    search_help_text = base.EVENT_ID_HELP + (
        ", an exact idempotency key or execution id, or a payload field: order.id=123."
    )
    ordering = ("-started_at",)
    readonly_fields = (
        "execution",
        "number",
        "worker",
        "started_at",
        "finished_at",
        "duration_ms",
        "outcome",
        "error_class",
        "error_message",
        "response_pretty",
    )
    fields = readonly_fields

    def indexed_search(self, term, prefixed):
        return Q(execution_id__in=_execution_ids(term, prefixed))

    # One line per cell, so the list fits a 1400 px window (tests/admin/test_browser.py).
    @admin.display(description="route", ordering="execution__route__name")
    def route(self, obj):
        return base.clipped(obj.execution.route.name, 7, title=str(obj.execution.route))

    @admin.display(description="error class", ordering="error_class")
    def error_cell(self, obj):
        """The class's own name (OutboundRefused); its module and the message on hover."""
        if not obj.error_class:
            return "—"
        whole = f"{obj.error_class}: {obj.error_message}" if obj.error_message else None
        return base.clipped(obj.error_class.rpartition(".")[2], 8, title=whole or obj.error_class)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj):
        return "—" if obj.duration_ms is None else f"{obj.duration_ms:,}\N{NO-BREAK SPACE}ms"

    @admin.display(description="worker", ordering="worker")
    def worker_cell(self, obj):
        return base.clipped(obj.worker, 7)

    @admin.display(description="response summary")
    def response_pretty(self, obj):
        return pretty_json(obj.response_summary)
