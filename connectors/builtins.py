"""The built-in connectors: log, http, webhook_forward, email, slack, python."""

import json
import logging
import smtplib

from django.core import mail
from django.utils.module_loading import import_string

from connectors import net
from connectors.base import Connector, ExecutionContext, PermanentError, Result, RetryableError
from guardrails import policy
from lib import signatures
from lib.redaction import is_secret_header, redact_headers

logger = logging.getLogger("connectors")

_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
_URL = {"type": "string", "minLength": 1}


class LogConnector(Connector):
    """Writes the event to the log and records what it wrote on the attempt.

    For demos and tests: it has no other side effect.
    """

    name = "log"
    description = "Record the event in the log and on the attempt."
    actions = {
        "record": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "additionalProperties": False,
        }
    }

    def execute(self, action: str, params: dict, context: ExecutionContext) -> Result:
        message = params.get("message", "")
        logger.info(
            "log connector: event %s (%s) execution %s attempt %s %s",
            context.event_id,
            context.event_type,
            context.execution_id,
            context.attempt,
            message,
        )
        return Result(
            summary={
                "logged": True,
                "event_id": context.event_id,
                "type": context.event_type,
                "message": message,
                "idempotency_key": context.idempotency_key,
            }
        )


class _HttpTarget(Connector):
    """A connector that calls a URL: its scheme, host and port are fixed in the route."""

    def target(self, action, params):
        try:
            return net.parse_target(params.get("url", ""))[1]
        except PermanentError:
            return ""

    def check(self, action, params):
        try:
            net.template_origin(params.get("url", ""))
        except PermanentError as exc:
            raise ValueError(f"url: {exc}") from None

    def check_rendered(self, action, params, *, template):
        # Defence in depth: whatever the event filled in, the request goes where the
        # route's literal URL says.
        try:
            expected = net.template_origin(template.get("url", ""))
        except PermanentError as exc:
            raise ValueError(f"url: in the route: {exc}; correct the route") from None
        actual = net.template_origin(params["url"])
        if actual != expected:
            raise ValueError(
                "url: after templating it points at {}://{}:{}, not {}://{}:{} as the route "
                "says; the event may fill only the path and the query".format(*actual, *expected)
            )


class HttpConnector(_HttpTarget):
    """Calls an HTTP API. 2xx is success; 408, 425, 429, 5xx, timeouts and connection errors
    are retried (Retry-After honoured); other 4xx fail at once."""

    name = "http"
    description = "Call an HTTP API with a JSON body; sends Idempotency-Key."
    actions = {
        method.lower(): {
            "type": "object",
            "properties": {"url": _URL, "headers": _HEADERS, "body": {}},
            "required": ["url"],
            "additionalProperties": False,
        }
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
    }

    def secret_params(self, action, params):
        headers = params.get("headers") if isinstance(params, dict) else None
        if not isinstance(headers, dict):
            return []
        return [("headers", name) for name in headers if is_secret_header(name)]

    def check(self, action, params):
        super().check(action, params)
        for name, value in params.get("headers", {}).items():
            if problem := net.header_name_problem(name) or net.header_value_problem(value):
                raise ValueError(f"headers.{name}: {problem}" if name else f"headers: {problem}")

    def _request_parts(self, action, params, context):
        headers = {"Idempotency-Key": context.idempotency_key, **params.get("headers", {})}
        body = None
        if "body" in params and action != "get":
            headers.setdefault("Content-Type", "application/json")
            body = json.dumps(params["body"], ensure_ascii=False).encode()
        return action.upper(), params["url"], headers, body

    def execute(self, action, params, context):
        method, url, headers, body = self._request_parts(action, params, context)
        response = net.request(method, url, headers=headers, body=body)
        return Result(
            summary={"request": {"method": method, "url": url}, **response.summary()},
            output=response.output(),
        )

    def dry_run(self, action, params, context):
        params = self.redact_secrets(action, params)
        method, url, headers, _ = self._request_parts(action, params, context)
        return Result(
            summary={
                "dry_run": True,
                "would_send": {
                    "method": method,
                    "url": url,
                    "headers": redact_headers(headers),
                    "body": params.get("body"),
                },
            }
        )


class WebhookForwardConnector(_HttpTarget):
    """Forwards the event's body and chosen headers to a URL, signed the Standard Webhooks
    way (webhook-id, webhook-timestamp, webhook-signature)."""

    name = "webhook_forward"
    description = "Forward the event, signed with a Standard Webhooks secret."
    actions = {
        "forward": {
            "type": "object",
            "properties": {
                "url": _URL,
                "secret": {"type": "string", "pattern": "^whsec_[A-Za-z0-9+/=]+$"},
                "headers": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["url", "secret"],
            "additionalProperties": False,
        }
    }

    def secret_params(self, action, params):
        return [("secret",)] if isinstance(params, dict) and "secret" in params else []

    def check(self, action, params):
        super().check(action, params)
        try:
            signatures.check_secret("standard_webhooks", params["secret"])
        except ValueError as exc:
            raise ValueError(f"secret: {exc}") from None
        for index, name in enumerate(params.get("headers", [])):
            if problem := net.header_name_problem(name):
                raise ValueError(f"headers[{index}]: {problem}")

    def execute(self, action, params, context):
        body = json.dumps(context.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            name: context.headers[name.lower()]
            for name in params.get("headers", [])
            if name.lower() in context.headers and context.headers[name.lower()] != "[redacted]"
        }
        headers.update(
            {
                "Content-Type": "application/json",
                "Idempotency-Key": context.idempotency_key,
                # webhook-id, webhook-timestamp and webhook-signature
                **signatures.sign(
                    "standard_webhooks", params["secret"], body, msg_id=context.idempotency_key
                ),
            }
        )
        response = net.request("POST", params["url"], headers=headers, body=body)
        return Result(
            summary={"request": {"method": "POST", "url": params["url"]}, **response.summary()},
            output=response.output(),
        )

    def dry_run(self, action, params, context):
        return Result(summary={"dry_run": True, "would_forward_to": params["url"]})


class EmailConnector(Connector):
    """Sends an email through Django's email backend; subject and body are templates."""

    name = "email"
    description = "Send an email (subject and body from templates)."
    actions = {
        "send": {
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "subject": {"type": "string", "minLength": 1},
                "body": {"type": "string"},
                "from": {"type": "string"},
            },
            "required": ["to", "subject", "body"],
            "additionalProperties": False,
        }
    }

    def execute(self, action, params, context):
        message = mail.EmailMessage(
            subject=params["subject"].replace("\n", " "),
            body=params["body"],
            from_email=params.get("from") or None,
            to=params["to"],
            headers={"X-Idempotency-Key": context.idempotency_key},
        )
        try:
            sent = message.send()
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            raise PermanentError(f"refused by the mail server: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise RetryableError(f"mail server unavailable: {exc}") from None
        return Result(summary={"sent": sent, "to": params["to"], "subject": params["subject"]})

    def dry_run(self, action, params, context):
        return Result(
            summary={"dry_run": True, "would_email": params["to"], "subject": params["subject"]}
        )


class SlackConnector(_HttpTarget):
    """Posts a templated message to a Slack incoming-webhook URL."""

    name = "slack"
    description = "Post a message to a Slack incoming webhook."
    actions = {
        "post": {
            "type": "object",
            "properties": {"url": _URL, "text": {"type": "string", "minLength": 1}},
            "required": ["url", "text"],
            "additionalProperties": False,
        }
    }

    def execute(self, action, params, context):
        body = json.dumps({"text": params["text"]}, ensure_ascii=False).encode()
        response = net.request(
            "POST", params["url"], headers={"Content-Type": "application/json"}, body=body
        )
        return Result(summary={"posted": True, **response.summary()}, output=response.output())

    def dry_run(self, action, params, context):
        return Result(summary={"dry_run": True, "would_post": params["text"]})


class PythonConnector(Connector):
    """Calls a Python function named by dotted path, only from PYTHON_CALLABLES.

    The function is called as `fn(event=..., params=..., context=...)` and may return a
    JSON-serialisable value (recorded) or raise RetryableError / PermanentError.
    """

    name = "python"
    description = "Call an allowed Python function."
    actions = {
        "call": {
            "type": "object",
            "properties": {
                "callable": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*$"},
                "params": {"type": "object"},
            },
            "required": ["callable"],
            "additionalProperties": False,
        }
    }

    def check(self, action, params):
        decision = policy.python_callable_decision(params["callable"])
        if not decision.allowed:
            raise ValueError(f"callable: {decision.reason}")

    def execute(self, action, params, context):
        decision = policy.python_callable_decision(params["callable"])
        if not decision.allowed:
            raise PermanentError(decision.reason)
        try:
            fn = import_string(params["callable"])
        except ImportError as exc:
            raise PermanentError(f"cannot import {params['callable']!r}: {exc}") from None
        value = fn(event=context.payload, params=params.get("params", {}), context=context)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)[:2000]
        return Result(summary={"returned": value})


BUILTINS = (
    LogConnector,
    HttpConnector,
    WebhookForwardConnector,
    EmailConnector,
    SlackConnector,
    PythonConnector,
)
