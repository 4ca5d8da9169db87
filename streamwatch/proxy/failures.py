"""Why the upstream could not be reached, in one word an operator can act on.

``upstream_errors_total{kind}`` keeps four kinds (``connect``, ``tls``, ``timeout``, ``protocol``);
the ``upstream.failed`` log line adds the ``reason`` behind the kind, found by walking the
exception's cause chain down to the operating system's error, so it does not depend on which HTTP
client raised it: ``dns`` (the name does not resolve), ``refused`` (nothing listens there),
``unreachable`` (no route), ``reset`` (reset during the handshake or before the response head),
``closed`` (closed before the response head), ``certificate`` or ``tls``, ``connect_timeout``,
``response_timeout`` (connected, no response headers in time), and ``invalid_response``. Anything
else is ``other``: a closed set, safe to aggregate on.
"""

from __future__ import annotations

import errno
import socket
import ssl

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it was raised from, outermost first (cycles cut)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        os_error = getattr(current, "os_error", None)  # aiohttp keeps the OSError here
        if isinstance(os_error, BaseException):
            current = os_error
        else:
            current = current.__cause__ or current.__context__
    return seen


def failure_reason(exc: BaseException, kind: str) -> str:
    """The specific reason behind an upstream failure of ``kind``."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return "certificate"
        if isinstance(item, ssl.SSLError):
            return "tls"
        if isinstance(item, socket.gaierror):
            return "dns"
        if isinstance(item, ConnectionRefusedError):
            return "refused"
        if isinstance(item, ConnectionResetError):
            return "reset"
        if isinstance(item, BrokenPipeError):
            return "closed"
        if isinstance(item, OSError) and item.errno in _UNREACHABLE:
            return "unreachable"
    if kind == "timeout":
        connect = any("connect" in type(item).__name__.lower() for item in chain)
        return "connect_timeout" if connect else "response_timeout"
    if kind == "protocol":
        return "invalid_response"
    return "tls" if kind == "tls" else "other"
