"""The guardrail settings kept in tables, cached per process.

Every change to them (through save or delete, from the admin, a command or a fixture)
gives the runtime state row a new `config_token` in the same transaction. Each decision
reads that row anyway, so a process reloads its cached settings exactly when they
changed: one query per decision instead of one per table, and no stale rule after a
change has committed.
"""

import contextlib
import contextvars
from dataclasses import dataclass

from django.db import models
from django.db.models.signals import post_delete, post_save

from guardrails.models import (
    AllowedAction,
    AllowedCallable,
    AllowedEventType,
    AllowedHost,
    KillSwitch,
    PayloadSchema,
    RateLimit,
    RuntimeState,
    new_config_token,
)


@dataclass(frozen=True)
class Snapshot:
    token: str
    switches: dict  # (scope, name) -> reason, engaged ones only
    allowed_types: dict  # source -> [pattern]
    schemas: dict  # source -> [(pattern, schema)]
    allowed_actions: frozenset  # {(connector, action)}
    rate_limited: frozenset  # {(scope, name)} that have a rate limit
    allowed_hosts: tuple = ()  # outbound host patterns from the table (beside OUTBOUND_HOSTS)
    allowed_callables: frozenset = frozenset()  # python connector paths from the table


def _load(token: str) -> Snapshot:
    allowed_types: dict = {}
    for source, pattern in AllowedEventType.objects.values_list("source", "pattern"):
        allowed_types.setdefault(source, []).append(pattern)
    schemas: dict = {}
    for source, pattern, schema in PayloadSchema.objects.filter(enabled=True).values_list(
        "source", "event_type", "schema"
    ):
        schemas.setdefault(source, []).append((pattern, schema))
    return Snapshot(
        token=token,
        switches={
            (scope, name): reason
            for scope, name, reason in KillSwitch.objects.engaged().values_list(
                "scope", "name", "reason"
            )
        },
        allowed_types=allowed_types,
        schemas=schemas,
        allowed_actions=frozenset(AllowedAction.objects.values_list("connector", "action")),
        rate_limited=frozenset(RateLimit.objects.values_list("scope", "name")),
        allowed_hosts=tuple(AllowedHost.objects.values_list("pattern", flat=True)),
        allowed_callables=frozenset(AllowedCallable.objects.values_list("path", flat=True)),
    )


class PerToken:
    """One value per process, built by `load(token)` and built again once the state
    row's config token is no longer the one it was built for."""

    def __init__(self, load):
        self._load = load
        self._cached = None  # (token, value)

    def get(self, token: str):
        cached = self._cached
        if cached is None or cached[0] != token:
            cached = self._cached = (token, self._load(token))
        return cached[1]


_snapshots = PerToken(_load)


def snapshot(token: str) -> Snapshot:
    """The settings as of `token` (read from the runtime state row by the caller)."""
    return _snapshots.get(token)


# The settings a worker read when it started an execution, bound while its connector
# runs on a pool thread: the connector's own guardrail checks (outbound hosts, callables)
# then need no database connection of their own, and see what the claim saw.
_bound: contextvars.ContextVar[Snapshot | None] = contextvars.ContextVar(
    "guardrail_snapshot", default=None
)


@contextlib.contextmanager
def bound(snap: Snapshot):
    """Answer current() with `snap` inside the block (this thread or task only)."""
    reset = _bound.set(snap)
    try:
        yield snap
    finally:
        _bound.reset(reset)


def current() -> Snapshot:
    """The settings bound by the worker for this action, or else as the database says now."""
    return _bound.get() or snapshot(RuntimeState.current().config_token)


def changed(**kwargs) -> None:
    """Signal handler: a guardrail setting changed; give the state row a new token."""
    RuntimeState.current()
    RuntimeState.objects.filter(pk=RuntimeState.SINGLETON_ID).update(
        config_token=new_config_token()
    )


class WatchedQuerySet(models.QuerySet):
    """For models whose rows are cached per process under the config token: save and
    delete are watched by signals (`watch`), and so is a bulk `update()`, unless it only
    touches `quiet_fields` (bookkeeping such as a credential's last use)."""

    quiet_fields: frozenset = frozenset()

    def update(self, **kwargs):
        updated = super().update(**kwargs)
        if updated and not kwargs.keys() <= self.quiet_fields:
            changed()
        return updated


def watch(*models_to_watch) -> None:
    """Give the state row a new token whenever one of these models' rows is saved or deleted."""
    for model in models_to_watch:
        label = model._meta.label
        post_save.connect(changed, sender=model, dispatch_uid=f"config.save.{label}")
        post_delete.connect(changed, sender=model, dispatch_uid=f"config.delete.{label}")


WATCHED = (
    KillSwitch,
    AllowedEventType,
    PayloadSchema,
    AllowedAction,
    RateLimit,
    AllowedHost,
    AllowedCallable,
)


def connect() -> None:
    watch(*WATCHED)
