from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse

from guardrails.killswitch import set_kill_switch
from guardrails.models import Mode, OperatorAction, OperatorToken, RuntimeState, Via


class KillSwitchForm(forms.ModelForm):
    engaged = forms.BooleanField(
        required=False,
        label="Kill switch engaged",
        help_text="While engaged, new events are stored and held and no worker claims anything.",
    )
    new_reason = forms.CharField(
        label="Reason",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required: why you are changing the kill switch. Kept in the audit log.",
    )

    class Meta:
        model = RuntimeState
        fields = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["engaged"].initial = self.instance.mode == Mode.KILLED


@admin.register(RuntimeState)
class RuntimeStateAdmin(admin.ModelAdmin):
    form = KillSwitchForm
    list_display = ("__str__", "mode", "changed_at", "changed_by", "reason")
    readonly_fields = ("mode", "changed_at", "changed_by", "reason")
    fieldsets = (
        ("Now", {"fields": ("mode", "changed_at", "changed_by", "reason")}),
        ("Change", {"fields": ("engaged", "new_reason")}),
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
        _, changed = set_kill_switch(
            engaged=form.cleaned_data["engaged"],
            actor=request.user,
            reason=form.cleaned_data["new_reason"],
            via=Via.ADMIN,
        )
        if not changed:
            self.message_user(request, "The kill switch was already in that state.", messages.INFO)

    def save_related(self, request, form, formsets, change):
        pass


@admin.register(OperatorAction)
class OperatorActionAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "via", "action", "target", "reason")
    list_filter = ("via", "action")
    search_fields = ("actor", "target", "reason")
    readonly_fields = ("at", "actor", "via", "action", "target", "reason", "details")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OperatorToken)
class OperatorTokenAdmin(admin.ModelAdmin):
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
