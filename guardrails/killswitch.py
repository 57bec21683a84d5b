from django.db import transaction
from django.utils import timezone

from guardrails import audit
from guardrails.models import KillSwitch, Mode, RuntimeState, Scope, Via


class ReasonRequired(ValueError):
    pass


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
    *, scope: str, name: str, engaged: bool, actor, reason: str, via: Via | str
) -> tuple[KillSwitch, bool]:
    """Engage or release the kill switch of one source, route or connector; audited.

    Returns (switch, changed). A reason is required either way.
    """
    reason = _required(reason)
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}")
    actor_name = audit.actor_name(actor)
    with transaction.atomic():
        _locked_state()  # waits for the claims in flight, as the global switch does
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
