"""The connectors this runtime knows, by name: the built-ins plus those named in settings.

`CONNECTORS` is a list of dotted paths to Connector subclasses, for example
`CONNECTORS=myapp.connectors.CrmConnector` in the environment.
"""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from connectors.base import Connector
from connectors.builtins import BUILTINS


class UnknownConnector(LookupError):
    pass


@cache
def _connectors(paths: tuple[str, ...]) -> dict[str, type[Connector]]:
    found = {cls.name: cls for cls in BUILTINS}
    for path in paths:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"CONNECTORS: cannot import {path!r}: {exc}") from None
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ImproperlyConfigured(f"CONNECTORS: {path!r} is not a Connector subclass")
        found[cls.name] = cls
    return found


def available() -> dict[str, type[Connector]]:
    return _connectors(tuple(getattr(settings, "CONNECTORS", ())))


def names() -> list[str]:
    return sorted(available())


def get(name: str) -> Connector:
    try:
        return available()[name]()
    except KeyError:
        raise UnknownConnector(f"Unknown connector {name!r}.") from None
