"""Sources and their credentials, and the counters of refused requests."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Max, OuterRef, Subquery, Sum
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from unfold.admin import ModelAdmin, TabularInline
from unfold.widgets import UnfoldAdminPasswordWidget, UnfoldAdminTextInputWidget

from events.models import (
    AuthScheme,
    RejectedRequest,
    Source,
    SourceKey,
    active_condition,
)
from events.sources import credentials
from lib import signatures
from lib.admin import ReadOnlyAdmin


class SourceKeyInline(TabularInline):
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
        widget=UnfoldAdminPasswordWidget(render_value=False),
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
                credentials.check_new_secret(scheme, secret)
            except credentials.SourceError as exc:
                self.add_error("secret", str(exc))
        return data


class RotateForm(forms.Form):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=UnfoldAdminPasswordWidget(render_value=False),
        help_text="Required for Stripe, Shopify and Slack; otherwise leave empty to generate.",
    )
    overlap = forms.CharField(
        initial="24h",
        widget=UnfoldAdminTextInputWidget,
        help_text="How long the current credentials stay valid: 0, 15m, 24h, 7d.",
    )

    def clean_overlap(self):
        try:
            return credentials.parse_duration(self.cleaned_data["overlap"])
        except credentials.SourceError as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(Source)
class SourceAdmin(ModelAdmin):
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
        active = active_condition(now, prefix="keys__")
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
        info = credentials.summary(obj)
        return f"Event id: {info['event_id']}. Type: {info['type']}."

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            _, plain = credentials.issue_first_credential(
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
                done = credentials.rotate(
                    source,
                    secret=form.cleaned_data["secret"] or None,
                    overlap=form.cleaned_data["overlap"],
                    actor=request.user,
                    via="admin",
                )
            except credentials.SourceError as exc:
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
