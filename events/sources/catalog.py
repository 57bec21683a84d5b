"""The catalog: the API keys and routes ingestion needs, cached per process.

Every save, delete or bulk update of a source, a credential or a route gives the runtime
state row a new config token (guardrails/config.py), in the same transaction as the
change. Ingestion reads that row anyway for the kill switch, so a web process reloads
these tables exactly when they changed: one query per request instead of one per table,
and no stale route, disabled source or revoked key once the change has committed, on any
process or host.
"""

import logging
from dataclasses import dataclass

from connectors.models import Route
from events.models import CredentialKind, Source, SourceKey
from guardrails.config import PerToken, watch
from lib import filters

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Catalog:
    token: str
    api_keys: dict  # key hash -> SourceKey (source attached): not revoked, not yet expired
    routes: tuple  # enabled routes, in pk order

    def matching(self, source: str, event_type: str, subject: dict) -> list[Route]:
        """Enabled routes that take this event (type, sources, filter), in a stable order."""
        return [route for route in self.routes if route.takes(source, event_type, subject)]


def _load(token: str) -> Catalog:
    keys = SourceKey.objects.active().select_related("source").filter(kind=CredentialKind.API_KEY)
    return Catalog(
        token=token,
        api_keys={key.key_hash: key for key in keys},
        routes=tuple(
            route for route in Route.objects.enabled().order_by("pk") if _readable(route)
        ),
    )


def _readable(route: Route) -> bool:
    """Compile the route's filter once for this process. Every save checks it, so this
    fails only for a row changed behind the models' back (a raw UPDATE): that route then
    takes nothing (its events are unrouted, and say so) rather than everything."""
    try:
        route.compiled_filter  # noqa: B018 - compiled and kept on the instance
    except filters.FilterError as exc:
        logger.error("route %s is skipped: its filter cannot be read: %s", route.name, exc)
        return False
    return True


_catalogs = PerToken(_load)


def catalog(token: str) -> Catalog:
    """The keys and routes as of `token` (read from the runtime state row by the caller)."""
    return _catalogs.get(token)


def connect() -> None:

    watch(Source, SourceKey, Route)
