"""Hop-by-hop header handling (RFC 9110 §7.6.1): what a proxy must not forward, in either direction.

End-to-end headers pass unchanged, in order, duplicates included. Framing headers are the proxy's
own business: each side's ``Content-Length`` / ``Transfer-Encoding`` describe that connection only.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1 lists Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding, Upgrade;
# Trailer describes this connection's trailers; Proxy-Authorization/-Authenticate address this hop
# (RFC 9110 §11.7). Host is rebuilt for the upstream by the client; Content-Length is recomputed by
# whichever side frames the body.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
_REQUEST_ONLY = frozenset({"host", "content-length", "expect"})


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Header names the sender listed in ``Connection``: hop-by-hop for this message too."""
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _end_to_end(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], also_drop: Iterable[str]
) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | _connection_tokens(headers) | set(also_drop)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


def upstream_request_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Client request headers to send upstream: end-to-end ones only, as the client wrote them."""
    return _end_to_end(headers, _REQUEST_ONLY)


def client_response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Upstream response headers to send to the client; body framing is set by the proxy."""
    return _end_to_end(headers, ("content-length",))
