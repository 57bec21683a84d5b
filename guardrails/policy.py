"""The guardrail policy: one place that says whether the runtime may act.

Every path asks here: ingestion (what to do with a new event) and the worker (right
before a connector is called). Later rules (scoped kill switches, allowlists, rate limits)
join these functions; callers do not change.
"""

import datetime
import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from guardrails import config, payloads
from guardrails.killswitch import set_scoped_kill_switch
from guardrails.models import (
    Mode,
    RateLimit,
    RuntimeState,
    Scope,
)
from lib.patterns import type_matches


class Verdict(enum.StrEnum):
    ALLOW = "allow"
    HOLD = "hold"
    BLOCK = "block"
    DEFER = "defer"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    until: datetime.datetime | None = None  # for DEFER: not before this time
    dry_run: bool = False  # for ALLOW: describe instead of act

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOW = Decision(Verdict.ALLOW)


def _kill_switch_decision(state: RuntimeState) -> Decision | None:
    if state.kill_switch_engaged:
        why = f": {state.reason}" if state.reason else ""
        return Decision(Verdict.HOLD, f"kill switch engaged{why}")
    return None


def _scoped_switch(snap, pairs: list[tuple[str, str]]) -> Decision | None:
    """The first engaged kill switch among (scope, name) pairs, as a HOLD."""
    for scope, name in pairs:
        if (scope, name) in snap.switches:
            reason = snap.switches[(scope, name)]
            why = f": {reason}" if reason else ""
            return Decision(Verdict.HOLD, f"kill switch for {scope} {name!r} engaged{why}")
    return None


class PayloadRejected(ValueError):
    """The payload breaks a schema of its source and type: refuse it, store nothing."""


def decide_ingest(*, source, event_type: str, payload=None, state=None) -> Decision:
    """What ingestion does with a new event of this source and type.

    Raises PayloadRejected, naming the field, when `payload` breaks the source's JSON
    Schema for the type. HOLD while the global or the source's kill switch is engaged;
    BLOCK a type the source's allowlist does not list (once it lists any). `state` is the
    runtime state row if the caller has just read it.
    """
    state = state or RuntimeState.current()
    snap = config.snapshot(state.config_token)
    if payload is not None:
        problem = payloads.schema_violation(
            snap, source=source.name, event_type=event_type, payload=payload
        )
        if problem:
            raise PayloadRejected(problem)
    decision = _kill_switch_decision(state) or _scoped_switch(snap, [(Scope.SOURCE, source.name)])
    if decision:
        return decision
    patterns = snap.allowed_types.get(source.name)
    if patterns and not any(type_matches(p, event_type) for p in patterns):
        return Decision(
            Verdict.BLOCK,
            f"event type {event_type!r} is not on the allowlist of source {source.name!r}",
        )
    return ALLOW


# What rate limits count: the start times of attempts since a moment, for one route
# (route_id=) or one connector (connector=), oldest first, at most `limit`. The engine,
# which owns attempts, hands its counter in (Attempt.objects.start_times).
StartsSince = Callable[..., list]


def decide_execution(*, execution, starts_since: StartsSince, state=None) -> Decision:
    """Whether the worker may call the connector for this execution now.

    Called inside the claim's transaction, right before the attempt starts. Reads the
    state afresh from the database (or takes `state`, read with RuntimeState.for_claim()
    in that same transaction for a whole claimed batch): kill switches (global, source,
    route, connector) hold; a rate limit defers; a route over its hard hourly budget trips
    its own kill switch; dry run (global or per route) allows with dry_run=True.
    """
    state = state or RuntimeState.for_claim()
    snap = config.snapshot(state.config_token)
    route = execution.route
    source_name = execution.event.source.name
    decision = _kill_switch_decision(state) or _scoped_switch(
        snap,
        [
            (Scope.SOURCE, source_name),
            (Scope.ROUTE, route.name),
            (Scope.CONNECTOR, route.connector),
        ],
    )
    if decision:
        return decision
    decision = action_decision(route.connector, route.action, snap=snap)
    if not decision.allowed:
        return decision
    if (Scope.ROUTE, route.name) in snap.rate_limited or (
        Scope.CONNECTOR,
        route.connector,
    ) in snap.rate_limited:
        decision = _rate_limit_decision(route, starts_since)
        if decision:
            return decision
    if state.mode == Mode.DRY_RUN or route.dry_run:
        return Decision(Verdict.ALLOW, "dry run", dry_run=True)
    return ALLOW


def _rate_limit_decision(route, starts_since: StartsSince) -> Decision | None:
    limits = list(
        RateLimit.objects.select_for_update()
        .filter(
            Q(scope=Scope.ROUTE, name=route.name) | Q(scope=Scope.CONNECTOR, name=route.connector)
        )
        .order_by("pk")
    )
    now = timezone.now()
    for limit in limits:
        by = (
            {"route_id": route.pk}
            if limit.scope == Scope.ROUTE
            else {"connector": route.connector}
        )
        if limit.scope == Scope.ROUTE and limit.runaway_per_hour:
            hour_ago = now - datetime.timedelta(hours=1)
            if (
                len(starts_since(since=hour_ago, limit=limit.runaway_per_hour, **by))
                >= limit.runaway_per_hour
            ):
                reason = (
                    f"runaway breaker: route {route.name!r} started "
                    f"{limit.runaway_per_hour} or more executions in an hour"
                )
                set_scoped_kill_switch(
                    scope=Scope.ROUTE,
                    name=route.name,
                    engaged=True,
                    actor="runaway-breaker",
                    reason=reason,
                    via="system",
                )
                return Decision(Verdict.HOLD, reason)
        window_start = now - datetime.timedelta(seconds=limit.window_seconds)
        started = starts_since(since=window_start, limit=limit.limit, **by)
        if len(started) >= limit.limit:
            # The window frees up when the oldest start in it leaves it.
            until = started[0] + datetime.timedelta(seconds=limit.window_seconds)
            return Decision(
                Verdict.DEFER,
                f"rate limit of {limit.scope} {limit.name!r}: "
                f"{limit.limit} per {limit.window_seconds}s",
                until=until,
            )
    return None


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        # *.example.com matches a.example.com and a.b.example.com, not example.com itself
        return host.endswith(pattern[1:])
    return host == pattern


def outbound_host_decision(host: str) -> Decision:
    """May a connector talk to this host name? Only hosts on the outbound allowlist."""

    host = (host or "").lower().rstrip(".")
    allowed = [*settings.OUTBOUND_HOSTS, *config.current().allowed_hosts]
    if any(_host_matches(host, pattern) for pattern in allowed):
        return ALLOW
    return Decision(
        Verdict.BLOCK,
        f"host {host!r} is not on the outbound host allowlist "
        "(OUTBOUND_HOSTS or Guardrails → Allowed hosts)",
    )


_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
# RFC 6052: where each prefix length puts the IPv4 address (bit offsets of its 32 bits;
# bits 64-71 are always skipped).
_RFC6052_LAYOUTS = {48: (48, 72), 56: (56, 72), 64: (72,), 96: (96,)}


def _rfc6052_ipv4(value: int, prefix_length: int) -> ipaddress.IPv4Address:
    bits = 0
    taken = 0
    starts = _RFC6052_LAYOUTS[prefix_length]
    for i, start in enumerate(starts):
        end = 64 if start < 64 else 128
        if i + 1 < len(starts):
            end = min(end, starts[i + 1])
        width = min(end - start, 32 - taken)
        bits = (bits << width) | ((value >> (128 - start - width)) & ((1 << width) - 1))
        taken += width
    return ipaddress.IPv4Address(bits)


def embedded_ipv4(address) -> list:
    """The IPv4 addresses an IPv6 address carries (IPv4-mapped, -compatible and
    -translated, NAT64, 6to4, Teredo server and client): packets to it may reach them."""
    if address.version != 6:
        return []
    value = int(address)
    found = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address in _IPV4_TRANSLATED or (address in _IPV4_COMPATIBLE and value > 1):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _NAT64_LOCAL_USE:
        # The operator picks the prefix length inside the /48: read every layout.
        found.extend(_rfc6052_ipv4(value, length) for length in (96, 48, 56, 64))
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)
    return list(dict.fromkeys(found))


def _reachable(address) -> bool:
    return address.is_global and not address.is_multicast


def _listed(address, entries: list[str]) -> bool:
    for entry in entries:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def private_address_decision(host: str, address) -> Decision:
    """Private, loopback, link-local and other special addresses are refused unless the
    host name or the address is explicitly allowed (OUTBOUND_ALLOW_PRIVATE).

    An IPv6 address that carries an IPv4 address (NAT64, 6to4, Teredo, IPv4-mapped and
    the like) is refused when any IPv4 address in it is private, unless that IPv4 address
    (or the host name) is allowed: listing an IPv6 network does not allow a private IPv4
    address hidden inside it."""

    entries = [entry.strip().lower() for entry in settings.OUTBOUND_ALLOW_PRIVATE]
    if host.lower() in entries:
        return ALLOW
    embedded = embedded_ipv4(address)
    hidden = [v4 for v4 in embedded if not _reachable(v4) and not _listed(v4, entries)]
    if hidden:
        return Decision(
            Verdict.BLOCK,
            f"{host!r} resolves to {address}, which carries the IPv4 address "
            f"{', '.join(map(str, hidden))}, a private or special address; refused "
            "(allow that IPv4 address explicitly with OUTBOUND_ALLOW_PRIVATE)",
        )
    if _reachable(address) or _listed(address, entries):
        return ALLOW
    if embedded and all(_listed(v4, entries) for v4 in embedded):
        # e.g. ::ffff:10.0.0.5 when 10.0.0.0/8 is allowed: it is that IPv4 address.
        return ALLOW
    return Decision(
        Verdict.BLOCK,
        f"{host!r} resolves to {address}, a private or special address; refused "
        "(allow it explicitly with OUTBOUND_ALLOW_PRIVATE)",
    )


def python_callable_decision(path: str) -> Decision:

    if path in settings.PYTHON_CALLABLES or path in config.current().allowed_callables:
        return ALLOW
    return Decision(
        Verdict.BLOCK, f"{path!r} is not on the allowlist of callables (PYTHON_CALLABLES)"
    )


def action_decision(connector: str, action: str, *, snap=None) -> Decision:
    """Once connector actions are listed, only those may be used."""
    listed = (snap or config.current()).allowed_actions
    if listed and (connector, action) not in listed:
        return Decision(
            Verdict.BLOCK, f"connector action {connector}.{action} is not on the allowlist"
        )
    return ALLOW
