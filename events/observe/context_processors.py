"""Context for every admin page: the runtime badge in the header
(templates/unfold/helpers/userlinks.html)."""

from django.utils.functional import SimpleLazyObject

from events.observe import dashboard
from guardrails.permissions import may_view_status


def runtime_badge(request) -> dict:
    """`runtime_badge`: the mode and the counts the header shows, for those who may see the
    runtime's status (None for others). Read only when a page renders it, once per page."""

    def read():
        return (
            dashboard.runtime_badge() if may_view_status(getattr(request, "user", None)) else None
        )

    return {"runtime_badge": SimpleLazyObject(read)}
