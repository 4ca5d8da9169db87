"""Responses streamwatch writes itself: small fixed JSON, never request bytes, never upstream URLs.

aiohttp's error pages echoed the offending request line (with ``Authorization`` or ``?key=``
values); these never contain anything the client sent. Nothing else is added: no ``Server``, no
``Date`` (the relay adds nothing to a response the upstream did not send either).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    404: b"Not Found",
    431: b"Request Header Fields Too Large",
    499: b"Client Closed Request",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A response streamwatch answers itself instead of (or after failing at) forwarding."""

    status: int
    code: str
    message: str
    close: bool = False  # the connection cannot be reused after it (body unread, or shutting down)
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def encode(self, *, close: bool = False) -> bytes:
        body = orjson.dumps(
            {"error": {"type": "streamwatch_error", "code": self.code, "message": self.message}}
        )
        lines = [
            b"HTTP/1.1 %d %s" % (self.status, _REASONS.get(self.status, b"Error")),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"x-streamwatch-error: " + self.code.encode(),
        ]
        lines += [name + b": " + value for name, value in self.headers]
        if close or self.close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


BAD_REQUEST = Refusal(400, "bad_request", "malformed HTTP request", close=True)
HEADERS_TOO_LARGE = Refusal(431, "headers_too_large", "request header block too large", close=True)
BAD_TARGET = Refusal(400, "bad_target", "only origin-form request targets are proxied")
BAD_PATH = Refusal(400, "bad_path", "dot-segments are not allowed in request paths")
# TRACE reflects the request, credentials included, to whoever reads the response (nginx: 405).
TRACE_REFUSED = Refusal(405, "method_not_allowed", "TRACE is not proxied")
UPGRADE_REFUSED = Refusal(
    501, "upgrade_not_supported", "protocol upgrades (WebSocket) are not proxied", close=True
)
NO_ROUTE = Refusal(404, "no_route", "no configured route matches this path")
DRAINING = Refusal(503, "draining", "streamwatch is shutting down", close=True)
OVERLOADED = Refusal(
    503, "overloaded", "too many concurrent streams", headers=((b"retry-after", b"1"),)
)
TOO_MANY_CONNECTIONS = Refusal(
    503, "too_many_connections", "too many client connections", close=True,
    headers=((b"retry-after", b"1"),),
)  # fmt: skip
BODY_TOO_LARGE = Refusal(413, "body_too_large", "request body too large", close=True)
BODY_TIMEOUT = Refusal(408, "body_timeout", "request body too slow", close=True)
UPSTREAM_CONNECT = Refusal(502, "upstream_connect", "upstream connection failed")
UPSTREAM_TLS = Refusal(502, "upstream_tls", "upstream TLS handshake failed")
UPSTREAM_TIMEOUT = Refusal(504, "upstream_timeout", "upstream did not answer in time")
UPSTREAM_PROTOCOL = Refusal(502, "upstream_protocol", "upstream sent an invalid response")
