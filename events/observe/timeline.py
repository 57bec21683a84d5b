"""An execution's history as one timeline: its creation, each attempt (when, after how
long a wait, what it sent and got back, once) and what operators did to it (held,
released, replayed, cancelled: who and why), oldest first."""

import json
from dataclasses import dataclass, field

from events.models import BulkOperation, Execution
from guardrails.models import OperatorAction

ACTS = {
    "executions.replay": "replayed",
    "executions.release": "released",
    "executions.cancel": "cancelled",
}
# Operator acts looked at: the newest this many since the execution was created.
ACTS_READ = 500
ATTEMPTS_SHOWN = 200


@dataclass
class Entry:
    at: object  # datetime
    kind: str  # created | attempt | act
    title: str
    offset: str = ""  # "+12.3 s" since the execution was created
    waited: str = ""  # the backoff before an attempt
    outcome: str = ""
    http_status: int | None = None
    duration: str = ""
    error: str = ""
    request: str = ""  # pretty JSON, shown once
    response: str = ""
    actor: str = ""
    reason: str = ""
    details: dict = field(default_factory=dict)


def _seconds(delta) -> str:
    value = delta.total_seconds()
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) if value else ""


def _acts(execution: Execution) -> list[OperatorAction]:
    """The audit entries that name this execution (their details list it, or the bulk
    operation they close holds it)."""
    found = []
    entries = OperatorAction.objects.filter(
        action__in=ACTS, at__gte=execution.created_at
    ).order_by("-at")[:ACTS_READ]
    for entry in entries:
        ids = entry.details.get("executions")
        if ids is None and entry.details.get("bulk_operation"):
            operation = BulkOperation.objects.filter(pk=entry.details["bulk_operation"]).first()
            ids = operation.execution_ids if operation else []
        if execution.pk in (ids or []):
            found.append(entry)
    return found


def timeline(execution: Execution) -> list[Entry]:
    created = execution.created_at
    entries = [
        Entry(
            at=created,
            kind="created",
            title="created held"
            if execution.status_reason.startswith("kill switch")
            else "created",
            offset="+0.0 s",
            reason=execution.status_reason if execution.total_attempts == 0 else "",
        )
    ]
    previous_end = created
    attempts = execution.attempt_set.order_by("number")[:ATTEMPTS_SHOWN]
    for attempt in attempts:
        summary = dict(attempt.response_summary or {})
        request = summary.pop("request", None)
        entries.append(
            Entry(
                at=attempt.started_at,
                kind="attempt",
                title=f"attempt {attempt.number}",
                offset=f"+{_seconds(attempt.started_at - created)}",
                waited=_seconds(attempt.started_at - previous_end),
                outcome=attempt.get_outcome_display() or "running",
                http_status=summary.get("status"),
                duration=f"{attempt.duration_ms:,} ms" if attempt.duration_ms is not None else "",
                error=": ".join(x for x in (attempt.error_class, attempt.error_message) if x),
                request=_pretty(request),
                response=_pretty(summary),
                details={"worker": attempt.worker},
            )
        )
        previous_end = attempt.finished_at or attempt.started_at
    for act in _acts(execution):
        entries.append(
            Entry(
                at=act.at,
                kind="act",
                title=ACTS[act.action],
                offset=f"+{_seconds(act.at - created)}",
                actor=act.actor,
                reason=act.reason,
                details={"via": act.via},
            )
        )
    return sorted(entries, key=lambda e: (e.at, e.kind != "created"))
