from django.db import transaction
from django.utils import timezone

from guardrails import audit
from guardrails.models import KillSwitch, Mode, RuntimeState, Scope, Via


class ReasonRequired(ValueError):
    pass


def set_kill_switch(
    *, engaged: bool, actor, reason: str, via: Via | str
) -> tuple[RuntimeState, bool]:
    """Engage or release the global kill switch and audit the change.

    Returns (state, changed). Setting the switch to the state it already has changes
    nothing and writes no audit entry. A reason is required either way.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required to change the kill switch.")
    target_mode = Mode.KILLED if engaged else Mode.RUNNING
    actor_name = actor.get_username() if hasattr(actor, "get_username") else str(actor)
    with transaction.atomic():
        RuntimeState.current()
        state = RuntimeState.objects.select_for_update().get(pk=RuntimeState.SINGLETON_ID)
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
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required to change a kill switch.")
    if scope not in Scope.values:
        raise ValueError(f"scope must be one of {', '.join(Scope.values)}")
    actor_name = actor.get_username() if hasattr(actor, "get_username") else str(actor)
    with transaction.atomic():
        # Wait for the claims in flight, as the global switch does (RuntimeState.for_claim).
        RuntimeState.current()
        RuntimeState.objects.select_for_update().get(pk=RuntimeState.SINGLETON_ID)
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
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required to change dry run.")
    actor_name = actor.get_username() if hasattr(actor, "get_username") else str(actor)
    with transaction.atomic():
        RuntimeState.current()
        state = RuntimeState.objects.select_for_update().get(pk=RuntimeState.SINGLETON_ID)
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
