"""The connector interface. A connector performs the side effects of a route's action.

A connector is a class with a `name`, its `actions` (each with a JSON Schema for its
parameters) and `execute(action, params, context)`. It tells failures apart by raising
RetryableError (may pass later) or PermanentError (will not). See docs/connectors.md.
"""

import datetime
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jsonschema

from automation_runtime.patterns import json_path


class ConnectorError(Exception):
    """Base class of the errors a connector raises."""


class RetryableError(ConnectorError):
    """The action may succeed if tried again later (timeouts, 5xx, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None, summary=None):
        super().__init__(message)
        self.retry_after = retry_after
        self.summary = summary or {}


class PermanentError(ConnectorError):
    """Trying again will not help (bad parameters, 4xx other than 408/425/429)."""

    def __init__(self, message: str, *, summary=None):
        super().__init__(message)
        self.summary = summary or {}


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
    received_at: str = ""


@dataclass
class Result:
    """What an action did, recorded on the attempt (keep `summary` short)."""

    summary: dict = field(default_factory=dict)


_validators: dict[int, tuple[dict, jsonschema.Draft202012Validator]] = {}


def _validator(schema: dict) -> jsonschema.Draft202012Validator:
    """One validator per action schema, built once: workers validate the rendered
    parameters before every call, and building a validator costs more than using it."""
    cached = _validators.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _validators[id(schema)] = (schema, jsonschema.Draft202012Validator(schema))
    return cached[1]


class Connector:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # action name -> JSON Schema of its parameters
    actions: ClassVar[dict[str, dict]]

    def validate(self, action: str, params) -> None:
        """Raise ValueError naming the problem if action or params are not acceptable.

        Called when a route is saved, and again at run time on the rendered parameters.
        """
        if action not in self.actions:
            raise ValueError(
                f"Connector {self.name!r} has no action {action!r}; "
                f"choose one of {', '.join(sorted(self.actions))}."
            )
        if not isinstance(params, dict):
            raise ValueError("Parameters must be a JSON object.")
        errors = sorted(_validator(self.actions[action]).iter_errors(params), key=lambda e: e.path)
        if errors:
            where = json_path(errors[0].absolute_path, root="(parameters)")
            raise ValueError(f"{where}: {errors[0].message}")
        self.check(action, params)

    def check(self, action: str, params: dict) -> None:
        """Further checks of a connector's own; raise ValueError."""

    def target(self, action: str, params: dict) -> str:
        """What the action talks to (a host name), for its circuit breaker; "" for none."""
        return ""

    def execute(self, action: str, params: dict, context: ExecutionContext) -> Result:
        raise NotImplementedError

    def dry_run(self, action: str, params: dict, context: ExecutionContext) -> Result:
        """Describe what execute would do, without doing it."""
        return Result(
            summary={"dry_run": True, "connector": self.name, "action": action, "params": params}
        )
