"""Connectors used by the tests. They do real work: sleep, fail on cue, call an HTTP sink."""

import json
import time
import urllib.error
import urllib.request

from connectors.base import Connector, PermanentError, Result, RetryableError


class ScriptedConnector(Connector):
    """Fails as told by params: `script` lists the outcome of each attempt in turn
    ("retryable", "permanent", "ok", "crash"); `retry_after` goes with retryable failures;
    `sleep` seconds before answering."""

    name = "scripted"
    actions = {"run": {"type": "object"}}

    def execute(self, action, params, context):
        time.sleep(float(params.get("sleep", 0)))
        script = params.get("script", [])
        step = script[context.attempt - 1] if context.attempt <= len(script) else "ok"
        if step == "retryable":
            raise RetryableError(
                f"try {context.attempt} failed", retry_after=params.get("retry_after")
            )
        if step == "permanent":
            raise PermanentError("this will never work")
        if step == "crash":
            raise ZeroDivisionError("bug in connector")
        return Result(summary={"attempt": context.attempt})


class SinkConnector(Connector):
    """POSTs the event to params["url"] with the execution's Idempotency-Key."""

    name = "sink"
    actions = {"post": {"type": "object", "required": ["url"]}}

    def execute(self, action, params, context):
        time.sleep(float(params.get("sleep", 0)))
        request = urllib.request.Request(
            params["url"],
            data=json.dumps({"event_id": context.event_id, "attempt": context.attempt}).encode(),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": context.idempotency_key,
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Result(summary={"status": response.status})
        except urllib.error.HTTPError as exc:
            if exc.code >= 500 or exc.code == 429:
                raise RetryableError(f"sink answered {exc.code}") from None
            raise PermanentError(f"sink answered {exc.code}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise RetryableError(f"sink unreachable: {exc}") from None
