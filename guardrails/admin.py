from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as DjangoGroupAdmin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group, User
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from unfold.admin import ModelAdmin
from unfold.forms import AdminPasswordChangeForm, UserChangeForm, UserCreationForm
from unfold.widgets import (
    UnfoldAdminTextareaWidget,
    UnfoldBooleanSwitchWidget,
    UnfoldBooleanWidget,
)

from guardrails.killswitch import UnknownName, check_known, set_kill_switch, set_scoped_kill_switch
from guardrails.models import (
    AllowedAction,
    AllowedCallable,
    AllowedEventType,
    AllowedHost,
    KillSwitch,
    Mode,
    OperatorAction,
    OperatorToken,
    PayloadSchema,
    RateLimit,
    RuntimeState,
    Via,
)
from lib.admin import ReadOnlyAdmin


class KillSwitchForm(forms.ModelForm):
    engaged = forms.BooleanField(
        required=False,
        label="Kill switch engaged",
        widget=UnfoldBooleanSwitchWidget,
        help_text="While engaged, new events are stored and held and no worker claims anything.",
    )
    new_reason = forms.CharField(
        label="Reason",
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 2}),
        help_text="Required: why you are changing the kill switch. Kept in the audit log.",
    )
    confirm = forms.BooleanField(
        label="Yes, change the kill switch",
        widget=UnfoldBooleanWidget,
        help_text="Engaging it stops every new action on every worker until it is released.",
    )

    class Meta:
        model = RuntimeState
        fields = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["engaged"].initial = self.instance.mode == Mode.KILLED


@admin.register(RuntimeState)
class RuntimeStateAdmin(ModelAdmin):
    form = KillSwitchForm
    list_display = ("__str__", "mode", "changed_at", "changed_by", "reason")
    readonly_fields = ("mode", "changed_at", "changed_by", "reason")
    fieldsets = (
        ("Now", {"fields": ("mode", "changed_at", "changed_by", "reason")}),
        ("Change", {"fields": ("engaged", "new_reason", "confirm")}),
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("guardrails.change_kill_switch")

    def changelist_view(self, request, extra_context=None):
        state = RuntimeState.current()
        return redirect(reverse("admin:guardrails_runtimestate_change", args=[state.pk]))

    def save_model(self, request, obj, form, change):
        engaged, reason = form.cleaned_data["engaged"], form.cleaned_data["new_reason"]
        _, changed = set_kill_switch(
            engaged=engaged, actor=request.user, reason=reason, via=Via.ADMIN
        )
        if not changed:
            self.message_user(request, "The kill switch was already in that state.", messages.INFO)
        else:
            said = "engaged" if engaged else "released"
            self.message_user(request, f"Kill switch {said}: {reason}", messages.SUCCESS)

    def response_change(self, request, obj):
        # save_model said what happened; the index shows the mode (and, after a release,
        # offers to release what the switch held).
        return redirect(reverse("admin:index"))

    def save_related(self, request, form, formsets, change):
        pass


@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "via", "action", "target", "reason")
    list_filter = ("via", "action")
    search_fields = ("actor", "target", "reason")
    readonly_fields = ("at", "actor", "via", "action", "target", "reason", "details")
    show_full_result_count = False


@admin.register(OperatorToken)
class OperatorTokenAdmin(ModelAdmin):
    list_display = ("prefix", "user", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        row, token = OperatorToken.issue(obj.user, name=obj.name)
        obj.pk = row.pk
        self.message_user(
            request,
            f"New operator token: {token} — copy it now, it is not shown again.",
            messages.WARNING,
        )


class ScopedKillSwitchForm(forms.ModelForm):
    reason = forms.CharField(
        widget=UnfoldAdminTextareaWidget(attrs={"rows": 2}),
        help_text="Required: why. Kept in the audit log.",
    )

    class Meta:
        model = KillSwitch
        fields = ("scope", "name", "engaged")

    def clean(self):
        cleaned = super().clean()
        scope, name = cleaned.get("scope"), cleaned.get("name")
        if self.instance.pk is None and scope and name:  # adding: the name was typed
            try:
                check_known(scope, name)
            except UnknownName as exc:
                self.add_error("name", str(exc))
        return cleaned


@admin.register(KillSwitch)
class KillSwitchAdmin(ModelAdmin):
    """Kill switches of one source, route or connector. Changes need a reason and a
    confirmation, and go through the same function as the CLI and API."""

    form = ScopedKillSwitchForm
    list_display = ("scope", "name", "engaged", "changed_by", "changed_at", "reason")
    list_filter = ("scope", "engaged")
    search_fields = ("name", "reason")
    actions = ["engage", "release"]

    def get_readonly_fields(self, request, obj=None):
        return ("scope", "name", "changed_by", "changed_at") if obj else ()

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("guardrails.change_kill_switch")

    def has_add_permission(self, request):
        return request.user.has_perm("guardrails.change_kill_switch")

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        switch, _ = set_scoped_kill_switch(
            scope=obj.scope,
            name=obj.name,
            engaged=form.cleaned_data["engaged"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
            via=Via.ADMIN,
        )
        obj.pk = switch.pk

    def _confirm(self, request, queryset, *, engaged: bool, action: str):
        reason = request.POST.get("reason", "").strip()
        if request.POST.get("confirm") == "yes" and reason:
            changed = 0
            for switch in queryset:
                changed += set_scoped_kill_switch(
                    scope=switch.scope,
                    name=switch.name,
                    engaged=engaged,
                    actor=request.user,
                    reason=reason,
                    via=Via.ADMIN,
                )[1]
            self.message_user(request, f"{changed} kill switch(es) changed.", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/guardrails/confirm_kill_switch.html",
            {
                **self.admin_site.each_context(request),
                "title": "Confirm the kill switch change",
                "switches": queryset,
                "verb": "engage" if engaged else "release",
                "action": action,
                "error": "A reason is required." if request.POST.get("confirm") == "yes" else "",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "opts": self.model._meta,
            },
        )

    @admin.action(description="Engage the selected kill switches", permissions=["change"])
    def engage(self, request, queryset):
        return self._confirm(request, queryset, engaged=True, action="engage")

    @admin.action(description="Release the selected kill switches", permissions=["change"])
    def release(self, request, queryset):
        return self._confirm(request, queryset, engaged=False, action="release")


@admin.register(AllowedEventType)
class AllowedEventTypeAdmin(ModelAdmin):
    list_display = ("source", "pattern")
    list_filter = ("source",)
    search_fields = ("source", "pattern")


@admin.register(RateLimit)
class RateLimitAdmin(ModelAdmin):
    list_display = ("scope", "name", "limit", "window_seconds", "runaway_per_hour")
    list_filter = ("scope",)


@admin.register(PayloadSchema)
class PayloadSchemaAdmin(ModelAdmin):
    list_display = ("source", "event_type", "enabled")
    list_filter = ("enabled", "source")


@admin.register(AllowedHost)
class AllowedHostAdmin(ModelAdmin):
    list_display = ("pattern",)
    search_fields = ("pattern",)


@admin.register(AllowedCallable)
class AllowedCallableAdmin(ModelAdmin):
    list_display = ("path",)
    search_fields = ("path",)


@admin.register(AllowedAction)
class AllowedActionAdmin(ModelAdmin):
    list_display = ("connector", "action")
    list_filter = ("connector",)


# Operators' accounts and groups (guardrails/permissions.py) on unfold's classes too, so
# these pages look like every other admin page. django.contrib.auth registered them first.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(DjangoUserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm


@admin.register(Group)
class GroupAdmin(DjangoGroupAdmin, ModelAdmin):
    pass
