"""A chain of steps as a tree, for the admin: from the event that came from outside, each
event with its executions, and under each execution the follow-up event it emitted
(events.engine.chains). Bounded: at most NODES events, read level by level."""

from dataclasses import dataclass, field

from events.models import Event, Execution

NODES = 100


@dataclass
class Node:
    event: Event
    executions: list = field(default_factory=list)  # [(execution, [child Node])]
    current: bool = False


def root_of(event: Event, limit: int = 50) -> Event:
    """The event that came from outside, following each event's causing execution up."""
    seen = 0
    while event.caused_by_id is not None and seen < limit:
        parent = Execution.objects.filter(pk=event.caused_by_id).select_related("event").first()
        if parent is None:  # pruned: the chain starts here now
            break
        event, seen = parent.event, seen + 1
    return event


def tree(event: Event) -> tuple[Node | None, bool]:
    """(the chain's root node, whether it was cut at NODES), or (None, False) when the
    event is not part of a chain (no parent, no follow-up)."""
    root = root_of(event)
    if root.pk == event.pk and not Event.objects.filter(caused_by__event=event).exists():
        return None, False
    top = Node(root, current=root.pk == event.pk)
    level, count, cut = [top], 1, False
    while level and not cut:
        executions = list(
            Execution.objects.filter(event__in=[n.event for n in level])
            .select_related("route")
            .order_by("pk")
        )
        children = {}
        for child in (
            Event.objects.filter(caused_by__in=executions)
            .select_related("source")
            .order_by("received_at")[: NODES - count + 1]
        ):
            children.setdefault(child.caused_by_id, []).append(child)
        by_event = {n.event.pk: n for n in level}
        next_level = []
        for ex in executions:
            nodes = []
            for child in children.get(ex.pk, []):
                if count >= NODES:
                    cut = True
                    break
                node = Node(child, current=child.pk == event.pk)
                nodes.append(node)
                count += 1
            by_event[ex.event_id].executions.append((ex, nodes))
            next_level.extend(nodes)
        level = next_level
    return top, cut
