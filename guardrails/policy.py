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


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        # *.example.com matches a.example.com and a.b.example.com, not example.com itself
        return host.endswith(pattern[1:])
    return host == pattern


def outbound_host_decision(host: str) -> Decision:
    """May a connector talk to this host name? Only hosts on the outbound allowlist."""
    from django.conf import settings

    host = (host or "").lower().rstrip(".")
    allowed = settings.OUTBOUND_HOSTS
    if any(_host_matches(host, pattern) for pattern in allowed):
        return ALLOW
    return Decision(
        Verdict.BLOCK,
        f"host {host!r} is not on the outbound host allowlist (OUTBOUND_HOSTS)",
    )


def private_address_decision(host: str, address) -> Decision:
    """Private, loopback, link-local and other special addresses are refused unless the
    host name or the address is explicitly allowed (OUTBOUND_ALLOW_PRIVATE)."""
    import ipaddress

    from django.conf import settings

    if address.is_global and not address.is_multicast:
        return ALLOW
    for entry in settings.OUTBOUND_ALLOW_PRIVATE:
        entry = entry.strip().lower()
        if entry == host.lower():
            return ALLOW
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return ALLOW
        except ValueError:
            continue
    return Decision(
        Verdict.BLOCK,
        f"{host!r} resolves to {address}, a private or special address; refused "
        "(allow it explicitly with OUTBOUND_ALLOW_PRIVATE)",
    )


def python_callable_decision(path: str) -> Decision:
    from django.conf import settings

    if path in settings.PYTHON_CALLABLES:
        return ALLOW
    return Decision(
        Verdict.BLOCK, f"{path!r} is not on the allowlist of callables (PYTHON_CALLABLES)"
    )
