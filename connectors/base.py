"""The connector interface. A connector performs the side effects of a route's action.

A connector is a class with a `name`, its `actions` (each with a JSON Schema for its
parameters) and `execute(action, params, context)`. It tells failures apart by raising
RetryableError (may pass later) or PermanentError (will not). See docs/connectors.md.
"""

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jsonschema

from lib import sealing
from lib.patterns import json_path
from lib.redaction import REDACTED

SEALED = "$sealed"
SEALING_PURPOSE = "connectors.route.secret-param"
# Known prefixes of credentials, kept whole in a hint (plus 3 characters of what follows).
_HINT_PREFIXES = ("whsec_", "ak_", "sk_", "Bearer ", "Basic ", "Token ")


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


# A result a chained step's templates see is at most this big as JSON; a bigger one is
# cut to the JSON text's first MAX_RESULT_BYTES characters (docs/workflows.md).
MAX_RESULT_BYTES = 65_536


@dataclass
class Result:
    """What an action did: `summary` is recorded on the attempt (keep it short); `output`
    is what a route's follow-up event sees as `{{ result }}` (JSON-able, bounded by
    MAX_RESULT_BYTES; None: the summary). docs/connectors.md says what each gives."""

    summary: dict = field(default_factory=dict)
    output: Any = None

    def templated(self):
        """`output` (or the summary), JSON-able and bounded: what `{{ result }}` is."""
        value = self.summary if self.output is None else self.output
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return {}
        if len(text) > MAX_RESULT_BYTES:
            return {"truncated": True, "text": text[:MAX_RESULT_BYTES]}
        return json.loads(text)


# -- secrets in parameters ----------------------------------------------------------------
# A secret parameter is stored as a sealed marker, {"$sealed": <Fernet token>, "hint":
# "whsec_abc"}, in place of its plain value; see Connector.secret_params.


def is_sealed(value) -> bool:
    """Is this a sealed marker (a secret stored encrypted)?"""
    return (
        isinstance(value, dict)
        and isinstance(value.get(SEALED), str)
        and set(value) <= {SEALED, "hint"}
    )


def hint_of(secret: str) -> str:
    """Enough of a secret to tell it apart from another, never enough to matter."""
    for known in _HINT_PREFIXES:
        if secret.startswith(known):
            return secret[: len(known) + 3]
    return secret[: min(4, len(secret) // 4)]


def seal_secret(plain: str) -> dict:
    """The sealed marker of a plain secret (raises sealing.SealingUnavailable)."""
    return {SEALED: sealing.seal(plain, purpose=SEALING_PURPOSE), "hint": hint_of(plain)}


def unseal_secret(marker: dict) -> str | None:
    """The plain secret, or None when no current or fallback SECRET_KEY reads it."""
    return sealing.unseal(marker[SEALED], purpose=SEALING_PURPOSE)


def path_text(path: tuple) -> str:
    """A parameter path as people read it: `headers.Authorization`."""
    return json_path(path, root="(parameters)")


_MISSING = object()


def value_at(params, path: tuple, default=None):
    """The value at a path of keys and list indexes, or default."""
    value = params
    for key in path:
        in_dict = isinstance(value, dict) and key in value
        in_list = isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value)
        if not (in_dict or in_list):
            return default
        value = value[key]
    return value


def with_value_at(params, path: tuple, value):
    """A copy of params with the value at path replaced (the path must exist)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(params, list):
        copy = list(params)
        copy[head] = with_value_at(params[head], rest, value)
        return copy
    return {**params, head: with_value_at(params[head], rest, value)}


def sealed_in(value, path: tuple = ()):
    """(path, marker) for every sealed marker in params."""
    if is_sealed(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from sealed_in(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from sealed_in(item, (*path, index))


def replace_sealed(value, replace, path: tuple = ()):
    """A copy of params with every sealed marker replaced by replace(path, marker)."""
    if is_sealed(value):
        return replace(path, value)
    if isinstance(value, dict):
        return {key: replace_sealed(item, replace, (*path, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_sealed(item, replace, (*path, i)) for i, item in enumerate(value)]
    return value


def _unreadable(path: tuple) -> str:
    return (
        f"{path_text(path)}: the stored secret cannot be read with SECRET_KEY or "
        "SECRET_KEY_FALLBACKS (was SECRET_KEY changed without keeping the old one as a "
        "fallback?); type it again in the route."
    )


def _revealed(params, error: type[Exception]):
    """params with every sealed marker unsealed; `error` naming the first unreadable one."""

    def reveal(path, marker):
        plain = unseal_secret(marker)
        if plain is None:
            raise error(_unreadable(path))
        return plain

    return replace_sealed(params, reveal)


def _schema_message(error, secret_paths) -> str:
    where = json_path(error.absolute_path, root="(parameters)")
    if tuple(error.absolute_path) not in secret_paths:
        return f"{where}: {error.message}"
    # jsonschema's message repeats the value: say what is wrong without it.
    problems = {
        "type": f"must be of type {error.validator_value!r}",
        "pattern": "does not have the required form",
        "minLength": "is too short",
        "maxLength": "is too long",
    }
    return f"{where}: {problems.get(error.validator, 'is not valid')} (the value is secret)"


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
        params = self._revealed_for_checks(params)
        secret_paths = set(self.secret_params(action, params))
        errors = sorted(_validator(self.actions[action]).iter_errors(params), key=lambda e: e.path)
        if errors:
            raise ValueError(_schema_message(errors[0], secret_paths))
        for path in secret_paths:
            value = value_at(params, path)
            if isinstance(value, str) and "{{" in value:
                raise ValueError(
                    f"{path_text(path)}: a secret cannot contain a placeholder; type the "
                    "value itself."
                )
        self.check(action, params)

    def _revealed_for_checks(self, params: dict) -> dict:
        return _revealed(params, ValueError)

    def check(self, action: str, params: dict) -> None:
        """Further checks of a connector's own; raise ValueError.

        Secrets arrive here in plain: never put a value in the message."""

    def check_rendered(self, action: str, params: dict, *, template: dict) -> None:
        """Run-time checks of the rendered parameters against the route's own (`template`,
        as saved, placeholders and all); raise ValueError. Called after validate."""

    def secret_params(self, action: str, params: dict) -> list[tuple]:
        """The paths (tuples of keys) of the parameters that are secrets, such as
        `("secret",)` or `("headers", "Authorization")`. They are stored encrypted, shown
        masked, kept out of summaries and logs, and may not contain placeholders.

        `params` may be anything the operator typed: check types before looking inside."""
        return []

    def seal_secrets(self, action: str, params) -> dict:
        """params with each plain secret replaced by its sealed marker (raises
        sealing.SealingUnavailable when there is no real SECRET_KEY)."""
        if not isinstance(params, dict):
            return params
        for path in self.secret_params(action, params):
            value = value_at(params, path)
            if isinstance(value, str):
                params = with_value_at(params, path, seal_secret(value))
        return params

    def reveal_secrets(self, params: dict) -> dict:
        """params with every sealed marker replaced by the plain secret, for execute.
        Raises PermanentError, naming the parameter, when one cannot be read."""
        return _revealed(params, PermanentError)

    def redact_secrets(self, action: str, params: dict) -> dict:
        """params with every secret, sealed or plain, replaced by "[redacted]"."""
        params = replace_sealed(params, lambda path, marker: REDACTED)
        for path in self.secret_params(action, params):
            if value_at(params, path, _MISSING) is not _MISSING:
                params = with_value_at(params, path, REDACTED)
        return params

    def target(self, action: str, params: dict) -> str:
        """What the action talks to (a host name), for its circuit breaker; "" for none."""
        return ""

    def execute(self, action: str, params: dict, context: ExecutionContext) -> Result:
        raise NotImplementedError

    def dry_run(self, action: str, params: dict, context: ExecutionContext) -> Result:
        """Describe what execute would do, without doing it."""
        return Result(
            summary={
                "dry_run": True,
                "connector": self.name,
                "action": action,
                "params": self.redact_secrets(action, params),
            }
        )
