from django.db.models import Count

from events.models import Event, EventStatus, Execution, ExecutionStatus


def counts_by_status() -> dict:
    """Events and executions by status, every status present (zero when none)."""
    events = dict.fromkeys(EventStatus.values, 0)
    events.update(Event.objects.order_by().values_list("status").annotate(n=Count("pk")))
    executions = dict.fromkeys(ExecutionStatus.values, 0)
    executions.update(Execution.objects.order_by().values_list("status").annotate(n=Count("pk")))
    return {"events": events, "executions": executions}
