"""The catalog: the API keys and routes ingestion needs, cached per process.

Every save, delete or bulk update of a source, a credential or a route gives the runtime
state row a new config token (guardrails/config.py), in the same transaction as the
change. Ingestion reads that row anyway for the kill switch, so a web process reloads
these tables exactly when they changed: one query per request instead of one per table,
and no stale route, disabled source or revoked key once the change has committed, on any
process or host.
"""

from dataclasses import dataclass

from connectors.models import Route
from events.models import CredentialKind, Source, SourceKey
from guardrails.config import PerToken, watch


@dataclass(frozen=True)
class Catalog:
    token: str
    api_keys: dict  # key hash -> SourceKey (source attached): not revoked, not yet expired
    routes: tuple  # enabled routes, in pk order

    def matching(self, event_type: str) -> list[Route]:
        """Enabled routes whose pattern matches event_type, in a stable order."""
        return [route for route in self.routes if route.matches(event_type)]


def _load(token: str) -> Catalog:
    keys = SourceKey.objects.active().select_related("source").filter(kind=CredentialKind.API_KEY)
    return Catalog(
        token=token,
        api_keys={key.key_hash: key for key in keys},
        routes=tuple(Route.objects.enabled().order_by("pk")),
    )


_catalogs = PerToken(_load)


def catalog(token: str) -> Catalog:
    """The keys and routes as of `token` (read from the runtime state row by the caller)."""
    return _catalogs.get(token)


def connect() -> None:

    watch(Source, SourceKey, Route)
