"""The connectors this runtime knows, by name."""

from connectors.base import Connector
from connectors.builtins import LogConnector

_BUILTINS: dict[str, type[Connector]] = {LogConnector.name: LogConnector}


class UnknownConnector(LookupError):
    pass


def names() -> list[str]:
    return sorted(_BUILTINS)


def get(name: str) -> Connector:
    try:
        return _BUILTINS[name]()
    except KeyError:
        raise UnknownConnector(f"Unknown connector {name!r}.") from None
