"""Operator acts from the admin (replay, cancel, release, approve, reject, route again), on
a selection or on one row's page: each asks for a reason, shows what it will do, and asks
again before it re-runs work that succeeded. The rules are events.operate's; this only asks
and tells."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse

from events.models import BulkAction
from events.operate import bulk


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 70}),
        help_text="Why: it goes to the audit log with your name.",
    )
    again = forms.BooleanField(
        required=False,
        label="Yes, run succeeded work again",
        help_text="A connector that honours the idempotency key will not repeat the side "
        "effect; others will.",
    )

    def __init__(self, *args, needs_again: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if needs_again:
            self.fields["again"].required = True
        else:
            del self.fields["again"]


VERBS = {
    BulkAction.REPLAY: ("Replay", "run again with the same idempotency key", "queued again"),
    BulkAction.CANCEL: ("Cancel", "stop before they run", "cancelled"),
    BulkAction.RELEASE: ("Release", "queue again now", "released"),
    BulkAction.APPROVE: ("Approve", "queue to run now (guardrails still apply)", "approved"),
    BulkAction.REJECT: ("Reject", "end as rejected, never run", "rejected"),
}


def one_row_acts(execution) -> list[str]:
    """The acts an execution in this status offers on its page (a replay of a succeeded
    one is offered too: the page asks before it runs the work again)."""
    return [
        act
        for act in VERBS
        if bulk.is_eligible(act, execution.status, execution.ordering_key, force=True)
    ]


def list_selection(request) -> dict:
    """The rows a list action was applied to, to carry through its confirmation page."""
    return {
        "ids": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        "across": request.POST.get("select_across") in ("1", "True", "true", "on"),
    }


def confirm_page(model_admin, request, *, title, lines, form, selection=None, action=""):
    """The page that asks: what will happen, the reason, and (for a selection) what was
    selected, carried in hidden fields so the action runs on the same rows."""
    return TemplateResponse(
        request,
        "admin/events/confirm_act.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "lines": lines,
            "form": form,
            "selected": selection["ids"] if selection else None,
            "select_across": bool(selection and selection["across"]),
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "opts": model_admin.model._meta,
        },
    )


def plan_lines(plan) -> list[str]:
    verb, does, _ = VERBS[plan.action]
    statuses = ", ".join(f"{n:,} {status}" for status, n in plan.by_status.items()) or "none"
    more = " (and more: only the first ones were counted)" if plan.more else ""
    lines = [
        f"Selected: {plan.selected:,} execution(s){more}: {statuses}.",
        f"{verb} would {does} {plan.eligible:,} of them; the others are left as they are.",
    ]
    if plan.succeeded:
        lines.append(f"{plan.succeeded:,} already succeeded: replaying runs their action again.")
    return lines
