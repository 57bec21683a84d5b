"""An execution's history as one timeline: its creation, each attempt (when, after how
long a wait, what it sent and got back, once) and what operators did to it (held,
released, replayed, cancelled, approved, rejected: who and why), oldest first."""

import json
from dataclasses import dataclass, field

from django.utils import timezone

from events.models import BulkOperation, Execution, ExecutionStatus
from guardrails.models import OperatorAction

ACTS = {
    "executions.replay": "replayed",
    "executions.release": "released",
    "executions.cancel": "cancelled",
    "executions.approve": "approved",
    "executions.reject": "rejected",
}
# Operator acts looked at: the newest this many since the execution was created.
ACTS_READ = 500
ATTEMPTS_SHOWN = 200
# Holds looked for: one per release (and one while held now), the newest this many.
HOLDS_READ = 20


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
    if value < 0:
        return f"-{_seconds(-delta)}"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _offset(at, created) -> str:
    text = _seconds(at - created)
    return text if text.startswith("-") else f"+{text}"


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


def _switches(execution: Execution) -> list[str]:
    """The audit targets of the kill switches that can hold this execution."""
    route = execution.route
    return [
        "global",
        f"source:{execution.event.source.name}",
        f"route:{route.name}",
        f"connector:{route.connector}",
    ]


def _holds(execution: Execution, acts: list[OperatorAction]) -> list[OperatorAction]:
    """The kill-switch engagements that held this execution: for each time it was
    released, and for now if it is held, the newest engagement before it of a switch that
    can hold it (global, its source's, route's or connector's). The execution itself
    records no hold; the audit log has who engaged the switch and why."""
    ends = [a.at for a in acts if a.action == "executions.release"]
    if execution.status == ExecutionStatus.HELD:
        ends.append(timezone.now())
    if not ends:
        return []
    switches = _switches(execution)
    found = {}
    for end in sorted(ends)[-HOLDS_READ:]:
        engaged = (
            OperatorAction.objects.filter(
                action="kill_switch.engage", target__in=switches, at__lte=end
            )
            .order_by("-at")
            .first()
        )
        if engaged is not None:
            found[engaged.pk] = engaged
    return list(found.values())


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
                offset=_offset(attempt.started_at, created),
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
    acts = _acts(execution)
    for act in acts:
        entries.append(
            Entry(
                at=act.at,
                kind="act",
                title=ACTS[act.action],
                offset=_offset(act.at, created),
                actor=act.actor,
                reason=act.reason,
                details={"via": act.via},
            )
        )
    for engaged in _holds(execution, acts):
        switch = (
            "the kill switch"
            if engaged.target == "global"
            else ("the kill switch of " + engaged.target.replace(":", " ", 1))
        )
        entries.append(
            Entry(
                at=engaged.at,
                kind="act",
                title=f"held: {switch} engaged",
                offset=_offset(engaged.at, created),
                actor=engaged.actor,
                reason=engaged.reason,
                details={"via": engaged.via},
            )
        )
    return sorted(entries, key=lambda e: (e.at, e.kind != "created"))
