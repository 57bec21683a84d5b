"""The guardrail policy: one place that says whether the runtime may act.

Every path asks here: ingestion (what to do with a new event) and the worker (right
before a connector is called). Later rules (scoped kill switches, allowlists, rate limits)
join these functions; callers do not change.
"""

import enum
from dataclasses import dataclass

from guardrails.models import RuntimeState


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"
    BLOCK = "block"
    DEFER = "defer"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOW = Decision(Verdict.ALLOW)


def _kill_switch_decision(state: RuntimeState) -> Decision | None:
    if state.kill_switch_engaged:
        why = f": {state.reason}" if state.reason else ""
        return Decision(Verdict.HOLD, f"kill switch engaged{why}")
    return None


def decide_ingest(*, source, event_type: str) -> Decision:
    """What ingestion does with a new event of this source and type."""
    return _kill_switch_decision(RuntimeState.current()) or ALLOW


def decide_execution(*, execution) -> Decision:
    """Whether the worker may call the connector for this execution now.

    Reads the runtime state afresh from the database: the kill switch is the first
    check before every side effect and takes effect from the next claim on.
    """
    return _kill_switch_decision(RuntimeState.current()) or ALLOW
