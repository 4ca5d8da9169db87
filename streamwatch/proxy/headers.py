"""Hop-by-hop header handling (RFC 9110 §7.6.1): what a proxy must not forward, in either direction.

End-to-end headers pass unchanged -- as bytes, never decoded, in order, duplicates included.
Framing headers are the relay's own business: each side's ``Content-Length`` /
``Transfer-Encoding`` describe that connection only.
"""

from __future__ import annotations

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 lists Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade;
# Trailer describes this connection's trailers; Proxy-Authorization/-Authenticate address this hop
# (RFC 9110 §11.7).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# Host is rebuilt for the upstream; Content-Length is set by whichever side frames the body;
# Expect is answered by streamwatch itself (100 Continue), as nginx does.
_REQUEST_ONLY = frozenset({b"host", b"content-length", b"expect"})
_RESPONSE_ONLY = frozenset({b"content-length"})


_DROP_REQUEST = HOP_BY_HOP | _REQUEST_ONLY
_DROP_RESPONSE = HOP_BY_HOP | _RESPONSE_ONLY


def tokens(headers: Headers, name: bytes) -> list[bytes]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    out: list[bytes] = []
    size = len(name)
    for key, value in headers:
        if len(key) == size and key.lower() == name:  # (a length compares without a copy)
            out += [t.strip().lower() for t in value.split(b",") if t.strip()]
    return out


def _end_to_end(headers: Headers, drop: frozenset[bytes]) -> Headers:
    named = tokens(headers, b"connection")
    if named:
        drop = drop.union(named)
    return [(k, v) for k, v in headers if k.lower() not in drop]


def upstream_request_headers(headers: Headers) -> Headers:
    """Client request headers to send upstream: end-to-end ones only, as the client wrote them."""
    return _end_to_end(headers, _DROP_REQUEST)


def client_response_headers(headers: Headers, *, keep_length: bool = False) -> Headers:
    """Upstream response headers to send to the client; body framing is set by the relay
    (``keep_length``: a HEAD or 304 response, whose Content-Length describes another body)."""
    return _end_to_end(headers, HOP_BY_HOP if keep_length else _DROP_RESPONSE)
