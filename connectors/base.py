"""The connector interface. A connector performs the side effects of a route's action."""

import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ConnectorError(Exception):
    """Base class of the errors a connector raises."""


class RetryableError(ConnectorError):
    """The action may succeed if tried again later (timeouts, 5xx, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Trying again will not help (bad parameters, 4xx other than 408/425/429)."""


@dataclass(frozen=True)
class ExecutionContext:
    """What a connector knows about the execution it runs for."""

    event_id: str
    event_type: str
    payload: Any
    headers: dict
    execution_id: int
    idempotency_key: str
    attempt: int
    deadline: datetime.datetime | None = None


@dataclass
class Result:
    """What an action did, recorded on the attempt (keep `summary` short)."""

    summary: dict = field(default_factory=dict)


class Connector:
    name: ClassVar[str]
    actions: ClassVar[tuple[str, ...]]

    def validate(self, action: str, params: dict) -> None:
        """Raise ValueError if action or params are not acceptable."""
        if action not in self.actions:
            raise ValueError(
                f"Connector {self.name!r} has no action {action!r}; "
                f"choose one of {', '.join(self.actions)}."
            )
        if not isinstance(params, dict):
            raise ValueError("Parameters must be a JSON object.")

    def execute(self, action: str, params: dict, context: ExecutionContext) -> Result:
        raise NotImplementedError
