import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Paginator
from django.db.models import Count, Max, OuterRef, Q, Subquery, Sum
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from events import bulk, operations, sources
from events.models import (
    Attempt,
    AuthScheme,
    BulkAction,
    BulkOperation,
    Event,
    Execution,
    ExecutionStatus,
    RejectedRequest,
    Source,
    SourceKey,
    WorkerHeartbeat,
)
from guardrails.permissions import may_operate
from lib import signatures
from lib.admin import ReadOnlyAdmin


class NoCountPaginator(Paginator):
    """Never COUNT(*) a big table: pretend there is always one more page."""

    @cached_property
    def count(self):
        return 10**9


def _pretty_json(value):
    return format_html(
        "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
    )


class SourceKeyInline(admin.TabularInline):
    model = SourceKey
    extra = 0
    fields = (
        "prefix",
        "kind",
        "label",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = ("prefix", "kind", "created_at", "last_used_at")
    can_delete = False
    verbose_name_plural = "credentials (keys are stored hashed, secrets encrypted)"

    def has_add_permission(self, request, obj=None):
        return False  # credentials come from creating the source or rotating its credentials


class SourceForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stripe, Shopify and Slack issue the signing secret: paste it here. "
        "Leave empty for other schemes to generate a key or secret (shown once).",
    )

    class Meta:
        model = Source
        fields = (
            "name",
            "enabled",
            "auth_scheme",
            "description",
            "api_key_header",
            "event_id_from",
            "event_id_field",
            "type_from",
            "type_field",
            "redact_headers",
        )

    def clean(self):
        data = super().clean()
        scheme = data.get("auth_scheme") or getattr(self.instance, "auth_scheme", "")
        secret = data.get("secret")
        if not self.instance.pk and scheme in signatures.PROVIDER_ISSUED and not secret:
            self.add_error("secret", "This provider issues the secret: paste it here.")
        elif secret and scheme:
            try:
                sources.check_new_secret(scheme, secret)
            except sources.SourceError as exc:
                self.add_error("secret", str(exc))
        return data


class RotateForm(forms.Form):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Required for Stripe, Shopify and Slack; otherwise leave empty to generate.",
    )
    overlap = forms.CharField(
        initial="24h", help_text="How long the current credentials stay valid: 0, 15m, 24h, 7d."
    )

    def clean_overlap(self):
        try:
            return sources.parse_duration(self.cleaned_data["overlap"])
        except sources.SourceError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    form = SourceForm
    list_display = (
        "name",
        "enabled",
        "auth_scheme",
        "active_credentials",
        "last_used",
        "rejected_7d",
        "created_at",
    )
    list_filter = ("enabled", "auth_scheme")
    search_fields = ("name",)
    inlines = [SourceKeyInline]
    actions = ["rotate_credentials"]
    fieldsets = (
        (None, {"fields": ("name", "url", "enabled", "auth_scheme", "secret", "description")}),
        (
            "Where the event id and type come from",
            {
                "fields": (
                    "api_key_header",
                    "event_id_from",
                    "event_id_field",
                    "type_from",
                    "type_field",
                    "rules",
                )
            },
        ),
        ("Stored headers", {"fields": ("redact_headers",)}),
    )

    def get_readonly_fields(self, request, obj=None):
        # Credentials belong to the scheme, so it cannot change under them.
        return ("url", "rules", "auth_scheme") if obj else ("url", "rules")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj:  # new secrets come from rotation, not from the change form
            first = dict(fieldsets[0][1])
            first["fields"] = tuple(f for f in first["fields"] if f != "secret")
            fieldsets = ((None, first), *fieldsets[1:])
        return fieldsets

    def get_queryset(self, request):
        now = timezone.now()
        week_ago = now.date() - timedelta(days=7)
        rejected = (
            RejectedRequest.objects.filter(source_name=OuterRef("name"), day__gt=week_ago)
            .values("source_name")
            .annotate(total=Sum("count"))
            .values("total")
        )
        active = Q(keys__revoked_at__isnull=True) & (
            Q(keys__expires_at__isnull=True) | Q(keys__expires_at__gt=now)
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_count=Count("keys", filter=active),
                last_used_at=Max("keys__last_used_at"),
                rejected_count=Subquery(rejected),
            )
        )

    @admin.display(description="active credentials", ordering="active_count")
    def active_credentials(self, obj):
        return obj.active_count

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj):
        return obj.last_used_at

    @admin.display(description="401s, 7 days", ordering="rejected_count")
    def rejected_7d(self, obj):
        if not obj.rejected_count:
            return 0
        url = reverse("admin:events_rejectedrequest_changelist")
        return format_html('<a href="{}?source_name={}">{}</a>', url, obj.name, obj.rejected_count)

    @admin.display(description="URL")
    def url(self, obj):
        return f"POST /webhook/{obj.name}" if obj and obj.name else "POST /webhook/<name>"

    @admin.display(description="in effect")
    def rules(self, obj):
        if not obj or not obj.pk:
            return "Saved with the scheme's defaults unless you choose otherwise."
        info = sources.summary(obj)
        return f"Event id: {info['event_id']}. Type: {info['type']}."

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            _, plain = sources.issue_first_credential(
                obj,
                secret=form.cleaned_data.get("secret") or None,
                actor=request.user,
                via="admin",
            )
            if not form.cleaned_data.get("secret"):
                self._show_once(request, obj, plain)

    def _show_once(self, request, source, plain):
        what = "API key" if source.auth_scheme == AuthScheme.API_KEY else "signing secret"
        self.message_user(
            request,
            format_html(
                "New {} for <b>{}</b>: <code>{}</code> — copy it now, it is not shown again.",
                what,
                source.name,
                plain,
            ),
            messages.WARNING,
        )

    @admin.action(
        description="Rotate credentials (old ones stay valid for an overlap)…",
        permissions=["change"],
    )
    def rotate_credentials(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rotate one source at a time.", messages.ERROR)
            return None
        source = queryset.get()
        form = RotateForm(request.POST if request.POST.get("confirm") == "yes" else None)
        if form.is_bound and form.is_valid():
            try:
                done = sources.rotate(
                    source,
                    secret=form.cleaned_data["secret"] or None,
                    overlap=form.cleaned_data["overlap"],
                    actor=request.user,
                    via="admin",
                )
            except sources.SourceError as exc:
                form.add_error("secret", str(exc))
            else:
                if not form.cleaned_data["secret"]:
                    self._show_once(request, source, done.plain)
                self.message_user(
                    request,
                    f"Rotated {source.name}: {len(done.retiring)} older credential(s) stay "
                    f"valid until {done.retire_at:%Y-%m-%d %H:%M:%S %Z}.",
                    messages.SUCCESS,
                )
                return None
        return TemplateResponse(
            request,
            "admin/events/source/rotate.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Rotate the credentials of {source.name}",
                "source": source,
                "form": form,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )


@admin.register(RejectedRequest)
class RejectedRequestAdmin(ReadOnlyAdmin):
    """Requests refused with 401, by day, source and reason. The sender saw only `401`."""

    list_display = ("day", "source_name", "reason", "count", "last_seen_at")
    list_filter = ("reason", "day", "source_name")
    search_fields = ("=source_name",)
    ordering = ("-day", "-count")


class TypeFilter(admin.SimpleListFilter):
    """Event types from the routes' patterns and the latest events.

    Django's default filter would list `SELECT DISTINCT type` over every event: a full
    scan of millions of rows on each page view. These choices cost two small queries."""

    title = "type"
    parameter_name = "type"
    lookup = "type"
    RECENT = 1000

    def lookups(self, request, model_admin):
        from connectors.models import Route

        types = {t for t in Route.objects.values_list("event_type", flat=True) if "*" not in t}
        latest = Event.objects.order_by("-received_at").values_list("type", flat=True)
        types.update(latest[: self.RECENT])
        if self.value():
            types.add(self.value())
        return [(t, t) for t in sorted(types)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.lookup: self.value()})
        return queryset


class ExecutionTypeFilter(TypeFilter):
    lookup = "event__type"


class NoCountChangeList(ChangeList):
    """Previous / next links instead of page numbers that would need a COUNT(*)."""

    @property
    def previous_page_url(self):
        return self.get_query_string({PAGE_VAR: self.page_num - 1}) if self.page_num > 1 else ""

    @property
    def next_page_url(self):
        full = len(self.result_list) >= self.list_per_page
        return self.get_query_string({PAGE_VAR: self.page_num + 1}) if full else ""


class BigTableAdmin(admin.ModelAdmin):
    """A read-only list over millions of rows: no COUNT(*), exact indexed search.

    Django's `=field` search is case-insensitive (UPPER(...) = UPPER(...)), which no plain
    index serves; ids are exact, so `exact_search` looks each one up through its index."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per filter choice
    list_per_page = 50  # rendering rows, not the database, is most of a page's time
    paginator = NoCountPaginator
    search_help_text = "An exact event id."

    def get_changelist(self, request, **kwargs):
        return NoCountChangeList

    def exact_search(self, term: str):
        """A Q for the rows matching `term` exactly."""
        raise NotImplementedError

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(self.exact_search(term)), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_operate_permission(self, request):
        """What the actions that release, replay, cancel or route again ask for."""
        return may_operate(request.user)

    def get_actions(self, request):
        # History goes through `manage.py prune`: batched, audited, and keeping what
        # duplicate detection needs. A delete over a million selected rows does none of it.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


def _execution_ids(term: str) -> list[int]:
    """Executions of the events with this event id, or with this idempotency key or id."""
    ids = set(Execution.objects.filter(event__event_id=term).values_list("pk", flat=True)[:1000])
    ids.update(Execution.objects.filter(idempotency_key=term).values_list("pk", flat=True))
    if term.isdigit() and len(term) < 18:
        ids.add(int(term))
    return sorted(ids)


class ExecutionInline(admin.TabularInline):
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


@admin.register(Event)
class EventAdmin(BigTableAdmin):
    list_display = ("event_id", "source", "type", "status", "received_at", "conflicts")
    list_filter = ("source", TypeFilter, "status", ("received_at", admin.DateFieldListFilter))
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
    )
    readonly_fields = fields

    def exact_search(self, term):
        return Q(event_id=term)

    @admin.action(
        description="Route again (create executions for routes added since)",
        permissions=["operate"],
    )
    def route_again(self, request, queryset):
        created = operations.replay_events(queryset, actor=request.user, via="admin")
        self.message_user(request, f"{created} new execution(s) queued.", messages.SUCCESS)

    @admin.display(description="payload")
    def payload_pretty(self, obj):
        return _pretty_json(obj.payload)

    @admin.display(description="headers (secrets redacted)")
    def headers_pretty(self, obj):
        return _pretty_json(obj.headers)


TIMELINE_MAX = 200


def _attempt_row(attempt):
    duration = f"{attempt.duration_ms:,} ms" if attempt.duration_ms is not None else "—"
    error = (
        format_html(
            "<b>{}</b><pre style='white-space:pre-wrap;margin:0'>{}</pre>",
            attempt.error_class,
            attempt.error_message,
        )
        if attempt.error_class or attempt.error_message
        else ""
    )
    summary = (
        json.dumps(attempt.response_summary, ensure_ascii=False, sort_keys=True)
        if attempt.response_summary
        else ""
    )
    return (
        attempt.number,
        attempt.worker,
        f"{attempt.started_at:%Y-%m-%d %H:%M:%S.%f}"[:-3],
        duration,
        attempt.get_outcome_display() or "running",
        error,
        summary,
    )


@admin.register(Execution)
class ExecutionAdmin(BigTableAdmin):
    list_display = ("id", "event", "route", "status", "attempts", "created_at", "updated_at")
    list_filter = (
        "status",
        "route",
        ("event__source", admin.RelatedFieldListFilter),
        ExecutionTypeFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("event__source", "route")
    search_fields = ("=event__event_id", "=idempotency_key")
    search_help_text = "An exact event id, idempotency key or execution id."
    ordering = ("-created_at",)
    actions = ["release_held", "replay", "cancel"]
    readonly_fields = (
        "event",
        "route",
        "status",
        "status_reason",
        "attempts",
        "total_attempts",
        "idempotency_key",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "lease_owner",
        "lease_expires_at",
        "finished_at",
        "last_error",
        "timeline",
    )
    fields = readonly_fields

    def exact_search(self, term):
        return Q(pk__in=_execution_ids(term))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("event__source", "route")

    @admin.display(description="attempts, oldest first")
    def timeline(self, obj):
        latest = list(obj.attempt_set.order_by("-number")[:TIMELINE_MAX])
        if not latest:
            return "No attempt yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td><code>{}</code></td></tr>",
            (_attempt_row(a) for a in reversed(latest)),
        )
        note = (
            f"The latest {TIMELINE_MAX} of {obj.total_attempts}. "
            if (obj.total_attempts > TIMELINE_MAX)
            else ""
        )
        return format_html(
            "{}<table class='attempt-timeline'><thead><tr><th>#</th><th>worker</th>"
            "<th>started</th><th>duration</th><th>outcome</th><th>error</th>"
            "<th>response</th></tr></thead><tbody>{}</tbody></table>",
            note,
            rows,
        )

    @staticmethod
    def _selection(request) -> str:
        if request.POST.get("select_across") in ("1", "True", "true", "on"):
            filters = request.GET.urlencode()
            return f"all matching {filters}" if filters else "all executions"
        return f"{len(request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))} selected"

    def _apply(self, request, queryset, action, done: str, *, force=False):
        """Run inline or hand to a worker (bulk.apply decides); report either way."""
        try:
            result = bulk.apply(
                queryset,
                action,
                actor=request.user,
                via="admin",
                force=force,
                selection=self._selection(request),
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
        self.message_user(request, f"{result} execution(s) {done}.", messages.SUCCESS)
        return None

    @admin.action(description="Release held executions", permissions=["operate"])
    def release_held(self, request, queryset):
        return self._apply(request, queryset, BulkAction.RELEASE, "released")

    @admin.action(description="Replay (same idempotency key)", permissions=["operate"])
    def replay(self, request, queryset):
        confirmed = request.POST.get("confirm") == "yes"
        if not confirmed:
            cap = bulk.BULK_MAX + 1
            succeeded = queryset.filter(status=ExecutionStatus.SUCCEEDED)[:cap].count()
            if succeeded:
                # A succeeded execution ran its side effect already: ask before doing it again.
                return TemplateResponse(
                    request,
                    "admin/events/execution/confirm_replay.html",
                    {
                        **self.admin_site.each_context(request),
                        "title": "Replay succeeded executions?",
                        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
                        "select_across": request.POST.get("select_across") == "1",
                        "succeeded": succeeded,
                        "total": queryset[:cap].count(),
                        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                        "opts": self.model._meta,
                    },
                )
        return self._apply(request, queryset, BulkAction.REPLAY, "queued again", force=confirmed)

    @admin.action(description="Cancel (queued, retrying or held)", permissions=["operate"])
    def cancel(self, request, queryset):
        return self._apply(request, queryset, BulkAction.CANCEL, "cancelled")


@admin.register(Attempt)
class AttemptAdmin(BigTableAdmin):
    """Every try of every execution, newest first; read-only."""

    list_display = (
        "id",
        "execution",
        "number",
        "route",
        "outcome",
        "error_class",
        "started_at",
        "duration_ms",
        "worker",
    )
    list_filter = (
        "outcome",
        ("execution__route", admin.RelatedFieldListFilter),
        ("started_at", admin.DateFieldListFilter),
    )
    list_select_related = ("execution__route",)
    search_fields = ("=execution__event__event_id",)
    search_help_text = "An exact event id, idempotency key or execution id."
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

    def exact_search(self, term):
        return Q(execution_id__in=_execution_ids(term))

    @admin.display(description="route", ordering="execution__route__name")
    def route(self, obj):
        return obj.execution.route.name

    @admin.display(description="response summary")
    def response_pretty(self, obj):
        return _pretty_json(obj.response_summary)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BulkOperation)
class BulkOperationAdmin(ReadOnlyAdmin):
    """Replay, cancel and release held on many executions, run by a worker; read-only."""

    list_display = ("id", "action", "force", "status", "progress", "errors", "actor", "created_at")
    list_filter = ("status", "action")
    readonly_fields = (
        "action",
        "force",
        "status",
        "progress",
        "affected",
        "errors",
        "last_error",
        "actor",
        "via",
        "selection",
        "executions",
        "created_at",
        "started_at",
        "progressed_at",
        "finished_at",
    )
    fields = readonly_fields
    change_form_template = "admin/events/bulkoperation/change_form.html"

    @admin.display(description="progress")
    def progress(self, obj):
        return obj.progress

    @admin.display(description="executions")
    def executions(self, obj):
        ids = obj.execution_ids or []
        shown = ", ".join(str(i) for i in ids[:20])
        return shown + (f" … ({len(ids):,} in all)" if len(ids) > 20 else "")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = (
        "worker_id",
        "hostname",
        "pid",
        "concurrency",
        "in_flight",
        "claims",
        "executions_run",
        "started_at",
        "last_seen_at",
    )
    readonly_fields = list_display

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
