"""Outbound HTTP that only goes where the guardrails allow.

The host must be on the outbound allowlist. Its name is resolved once; every address is
checked (private, loopback, link-local and other special addresses are refused unless
explicitly allowed), and the connection is made to the address that was checked, so a
DNS answer that changes between check and connect (DNS rebinding) cannot redirect it.
Redirects are not followed.
"""

import email.utils
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

from connectors.base import PermanentError, RetryableError
from guardrails import policy

RETRYABLE_STATUSES = {408, 425, 429}
MAX_BODY_SUMMARY = 2000


class Refused(PermanentError):
    """The guardrails refused the target; no connection was made."""


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

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
