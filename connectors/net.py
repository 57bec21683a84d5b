"""Outbound HTTP that only goes where the guardrails allow.

The host must be on the outbound allowlist. Its name is resolved once; every address is
checked (private, loopback, link-local and other special addresses are refused unless
explicitly allowed), and the connection is made to the address that was checked, so a
DNS answer that changes between check and connect (DNS rebinding) cannot redirect it.
Redirects are not followed.

A destination's scheme, host and port are literal in the route (`template_origin`); the
event may fill only the path and query. Header names must be HTTP tokens and values free
of control characters, and the framing and hop-by-hop headers are this module's to set.
"""

import contextlib
import email.utils
import ipaddress
import json
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

from connectors.base import MAX_RESULT_BYTES, PermanentError, RetryableError
from guardrails import policy

RETRYABLE_STATUSES = {408, 425, 429}
MAX_BODY_SUMMARY = 2000

# The literal start of a destination URL: scheme, "//", an authority with no placeholder,
# backslash or space, then the path, the query or the end. Checked before templating.
_ORIGIN = re.compile(r"^(https?)://([^/?#\\{}\s]+)(?=[/?]|\Z)", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_URL_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 9110 token: the characters a header name may have.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than horizontal tab (CR, LF and NUL among them), and anything
# a header cannot carry (beyond Latin-1).
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
# Framing and hop-by-hop headers: set by this module and the HTTP client, never by a route.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "proxy-authorization",
    }
)


class Refused(PermanentError):
    """The guardrails refused the target; no connection was made."""


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def output(self) -> dict:
        """What a chained step sees as `{{ result }}`: the status, and the body parsed as
        JSON when it is JSON (else its text), the whole of it up to MAX_RESULT_BYTES."""
        text = self.body[:MAX_RESULT_BYTES].decode("utf-8", errors="replace")
        body = text
        if len(self.body) <= MAX_RESULT_BYTES:
            with contextlib.suppress(ValueError):
                body = json.loads(text)
        return {"status": self.status, "body": body}

    def summary(self) -> dict:
        text = self.body[:MAX_BODY_SUMMARY].decode("utf-8", errors="replace")
        return {
            "status": self.status,
            "body": text,
            "truncated": len(self.body) > MAX_BODY_SUMMARY,
        }


def parse_target(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(f"URL scheme must be http or https: {url!r}")
    if not parts.hostname:
        raise Refused(f"URL has no host: {url!r}")
    if parts.username or parts.password:
        raise Refused("URLs with credentials in them are refused; send a header instead.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"URL has an invalid port: {url!r}") from None
    return parts.scheme, parts.hostname.lower(), port


def template_origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of a destination URL that may hold placeholders in its path
    and query, read by parse_target from the literal start. Raises Refused when they are
    not literal (a placeholder, backslash or space before the path) or the URL holds a
    control character."""
    if not isinstance(url, str):
        raise Refused("the URL must be a string")
    if _URL_CONTROL.search(url):
        raise Refused("the URL contains a control character (such as a tab, CR, LF or NUL)")
    scheme = _SCHEME.match(url)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        raise Refused(f"URL scheme must be http or https: {url!r}")
    match = _ORIGIN.match(url)
    if not match:
        raise Refused(
            "the scheme, host and port must be written out, as in https://host[:port]/path; "
            "placeholders may appear only in the path and the query"
        )
    return parse_target(match.group(0))


def header_name_problem(name) -> str | None:
    """Why `name` cannot be sent as a header name by a route, or None."""
    if not isinstance(name, str) or not name:
        return "a header name cannot be empty"
    if not _TOKEN.fullmatch(name):
        return f"{name!r} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
    if name.lower() in RESERVED_HEADERS:
        return f"{name!r} is a framing or hop-by-hop header, set by the HTTP client itself"
    return None


def header_value_problem(value) -> str | None:
    """Why `value` cannot be sent as a header value, or None. Never repeats the value: it
    may be a secret."""
    if not isinstance(value, str):
        return "a header value must be a string"
    if _BAD_HEADER_VALUE.search(value):
        return (
            "the value contains a control character (such as CR, LF or NUL) or a character "
            "a header cannot carry"
        )
    return None


def header_problem(name, value) -> str | None:
    """The first problem of a header, naming it, or None."""
    if problem := header_name_problem(name) or header_value_problem(value):
        return f"header {name!r}: {problem}"
    return None


def checked_address(host: str, port: int) -> str:
    """Resolve once; return an address the guardrails allow, or raise Refused."""
    decision = policy.outbound_host_decision(host)
    if not decision.allowed:
        raise Refused(decision.reason)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [literal]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise RetryableError(f"cannot resolve {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise RetryableError(f"{host!r} has no address")
    # Every address must pass: a name with one public and one private address is refused.
    for address in addresses:
        verdict = policy.private_address_decision(host, address)
        if not verdict.allowed:
            raise Refused(verdict.reason)
    return str(addresses[0])


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def request(method: str, url: str, *, headers: dict, body: bytes | None) -> Response:
    """One HTTP request to a checked address. Raises Refused, RetryableError or PermanentError
    for what is not a 2xx; returns the response for a 2xx."""
    scheme, host, port = parse_target(url)
    for name, value in headers.items():
        if problem := header_problem(name, value):
            raise PermanentError(problem)
    address = checked_address(host, port)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timeout = urllib3.Timeout(
        connect=settings.HTTP_CONNECT_TIMEOUT, read=settings.HTTP_READ_TIMEOUT
    )
    host_header = host if port in (80, 443) else f"{host}:{port}"
    if ":" in address:
        address = f"[{address}]"
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    try:
        raw = pool.urlopen(
            method,
            path,
            body=body,
            headers={"Host": host_header, **headers},
            redirect=False,
            preload_content=False,
        )
        data = raw.read(MAX_BODY_SUMMARY + 1, decode_content=True)
        raw.release_conn()
    except (
        urllib3.exceptions.TimeoutError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.NewConnectionError,
        urllib3.exceptions.SSLError,
        OSError,
    ) as exc:
        raise RetryableError(f"{method} {host}: {type(exc).__name__}: {exc}") from None
    finally:
        pool.close()
    response = Response(status=raw.status, headers=dict(raw.headers), body=data)
    if 200 <= raw.status < 300:
        return response
    message = f"{method} {host} answered {raw.status}"
    if raw.status >= 500 or raw.status in RETRYABLE_STATUSES:
        raise RetryableError(
            message,
            retry_after=retry_after_seconds(raw.headers.get("Retry-After")),
            summary=response.summary(),
        )
    raise PermanentError(message, summary=response.summary())
