"""What a log line is about (event, execution, source, route, attempt, worker), and the
JSON log format (`LOG_FORMAT=json`) that writes it down.

Code that handles one event or one execution enters `log_context(...)` once; every log
call made inside it, in any module, carries those fields without passing them along:

    with log_context(execution_id=42, worker=WORKER_ID):
        bind(event_id="evt_1", source="shop")   # learnt later, kept until the block ends
        logger.info("connector called")         # -> {"execution_id": 42, "event_id": ...}

The fields live in a `contextvars.ContextVar`, so concurrent requests in threads never mix
them. A field given with `logger.info(..., extra={"event_id": ...})` wins over the context.
"""

import contextlib
import contextvars
import datetime
import json
import logging

# The fields a log line may carry, in the order the JSON format writes them.
FIELDS = ("event_id", "event_uuid", "execution_id", "source", "route", "attempt", "worker")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "automation_log_context", default=None
)


def current() -> dict:
    """The fields of the innermost log context (empty outside one)."""
    return dict(_context.get() or {})


@contextlib.contextmanager
def log_context(**fields):
    """Add fields to every log line written inside the block (None values are skipped).

    Nested blocks add to the outer one; leaving a block restores what was there before,
    including whatever `bind` added inside it."""
    token = _context.set({**current(), **_known(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields) -> None:
    """Add fields to the enclosing `log_context` block until it ends (None is skipped)."""
    _context.set({**current(), **_known(fields)})


def _known(fields: dict) -> dict:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown log context fields: {', '.join(sorted(unknown))}")
    return {key: value for key, value in fields.items() if value is not None}


class LogContextFilter(logging.Filter):
    """Copies the log context onto each record (as attributes), where any formatter, and a
    handler on another thread (QueueHandler), can still read it. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the context
    fields that are known, and `exc_info` (the formatted traceback) for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current()
        for key in FIELDS:
            value = getattr(record, key, context.get(key))
            if value is not None:
                line[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # ensure_ascii keeps each object on one line whatever the message holds; json
        # escapes newlines inside strings, so a traceback stays on its line too.
        return json.dumps(line, ensure_ascii=True, default=str)
