import difflib
from collections.abc import Callable, Iterable

from django.db import transaction
from django.utils import timezone

from guardrails import audit
from guardrails.models import KillSwitch, Mode, RuntimeState, Scope, Via

MAX_NAMES_LISTED = 20


class ReasonRequired(ValueError):
    pass


class UnknownName(ValueError):
    """A scoped kill switch names no source, route or connector: engaged, it would
    protect nothing. The message names it and the close matches, or the known names."""

    def __init__(self, scope: str, name: str, known: list[str]):
        self.scope, self.name, self.known = scope, name, known
        super().__init__(_unknown_message(scope, name, known))


# (one, many): what a scope's names name.
_NOUNS = {
    Scope.SOURCE: ("source", "sources"),
    Scope.ROUTE: ("route", "routes"),
    Scope.CONNECTOR: ("connector used by a route", "connectors routes use"),
}


def _unknown_message(scope: str, name: str, known: list[str]) -> str:
    one, many = _NOUNS[scope]
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        hint = "did you mean " + " or ".join(repr(n) for n in close) + "?"
    elif known:
        listed = ", ".join(known[:MAX_NAMES_LISTED])
        more = (
            f" and {len(known) - MAX_NAMES_LISTED} more" if len(known) > MAX_NAMES_LISTED else ""
        )
        hint = f"the {many} are: {listed}{more}."
    else:
        hint = f"there are no {many}."
    return f"No {one} is named {name!r}; {hint}"


# Scope -> a function returning the names a switch of that scope can protect. The apps
# that own those names (events: sources; connectors: routes and the connectors they use)
# register them when they are ready, so guardrails, below them, imports neither.
_NAME_PROVIDERS: dict[str, Callable[[], Iterable[str]]] = {}


def register_names(scope: str, provider: Callable[[], Iterable[str]]) -> None:
    """Tell kill switches of `scope` which names exist (called from an AppConfig.ready)."""
    if scope not in Scope.values:
        raise ValueError(f"unknown scope {scope!r}")
    _NAME_PROVIDERS[scope] = provider


def known_names(scope: str) -> list[str]:
    """The names a kill switch of `scope` can protect now, sorted: the sources, the
    routes, or the connectors that routes use."""
    provider = _NAME_PROVIDERS.get(scope)
    return sorted(set(provider())) if provider is not None else []


def check_known(scope: str, name: str) -> None:
    """Raise UnknownName unless `name` is one of known_names(scope) or already has a
    kill switch of that scope (it was named on purpose before)."""
    if KillSwitch.objects.filter(scope=scope, name=name).exists():
        return
    known = known_names(scope)
    if name not in known:
        raise UnknownName(scope, name, known)


def _required(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required for this change; it goes in the audit log.")
    return reason


def _locked_state() -> RuntimeState:
    """The state row, locked FOR UPDATE: every guardrail change waits for the claims in
    flight, which read it FOR SHARE (RuntimeState.for_claim)."""
    RuntimeState.current()
    return RuntimeState.objects.select_for_update().get(pk=RuntimeState.SINGLETON_ID)


def set_kill_switch(
    *, engaged: bool, actor, reason: str, via: Via | str
) -> tuple[RuntimeState, bool]:
    """Engage or release the global kill switch and audit the change.

    Returns (state, changed). Setting the switch to the state it already has changes
    nothing and writes no audit entry. A reason is required either way.
    """
    reason = _required(reason)
    target_mode = Mode.KILLED if engaged else Mode.RUNNING
    actor_name = audit.actor_name(actor)
    with transaction.atomic():
        state = _locked_state()
        if state.mode == target_mode:
            return state, False
        previous = state.mode
        state.mode = target_mode
        state.changed_at = timezone.now()
        state.changed_by = actor_name
        state.reason = reason
        state.save()
        audit.record(
            actor=actor_name,
            via=via,
            action="kill_switch.engage" if engaged else "kill_switch.release",
            target="global",
            reason=reason,
            previous_mode=previous,
            mode=target_mode,
        )
    return state, True


def set_scoped_kill_switch(
    *,
    scope: str,
    name: str,
    engaged: bool,
    actor,
    reason: str,
    via: Via | str,
    allow_unknown: bool = False,
) -> tuple[KillSwitch, bool]:
    """Engage or release the kill switch of one source, route or connector; audited.

    Returns (switch, changed). A reason is required either way. Engaging a name that is
    not known (check_known) raises UnknownName unless `allow_unknown`: a typo would
    protect nothing. Releasing one is allowed and changes nothing; no switch is created
    for it, so a typo leaves no trace.
    """
    reason = _required(reason)
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}")
    actor_name = audit.actor_name(actor)
    with transaction.atomic():
        _locked_state()  # waits for the claims in flight, as the global switch does
        try:
            check_known(scope, name)
        except UnknownName:
            if not engaged:
                return KillSwitch(scope=scope, name=name), False
            if not allow_unknown:
                raise
        switch, _ = KillSwitch.objects.get_or_create(scope=scope, name=name)
        switch = KillSwitch.objects.select_for_update().get(pk=switch.pk)
        if switch.engaged == engaged:
            return switch, False
        switch.engaged = engaged
        switch.reason = reason
        switch.changed_by = actor_name
        switch.changed_at = timezone.now()
        switch.save()
        audit.record(
            actor=actor_name,
            via=via,
            action="kill_switch.engage" if engaged else "kill_switch.release",
            target=f"{scope}:{name}",
            reason=reason,
        )
    return switch, True


def set_dry_run(*, enabled: bool, actor, reason: str, via: Via | str) -> tuple[RuntimeState, bool]:
    """Switch global dry run on or off (only from running, or back to it); audited."""
    reason = _required(reason)
    actor_name = audit.actor_name(actor)
    with transaction.atomic():
        state = _locked_state()
        want, expected = (Mode.DRY_RUN, Mode.RUNNING) if enabled else (Mode.RUNNING, Mode.DRY_RUN)
        if state.mode == want:
            return state, False
        if state.mode != expected:
            raise ValueError(f"The runtime is {state.mode}; release the kill switch first.")
        state.mode, state.reason, state.changed_by = want, reason, actor_name
        state.changed_at = timezone.now()
        state.save()
        audit.record(
            actor=actor_name,
            via=via,
            action="dry_run.on" if enabled else "dry_run.off",
            target="global",
            reason=reason,
        )
    return state, True
