"""Idle upstream keep-alive connections, per origin.

The guarantee (nginx, Envoy and HAProxy give the same): a connection comes back to the pool only
after a response whose framing ended cleanly -- llhttp saw the end of a Content-Length or chunked
body, the request body was sent whole, both sides allowed keep-alive and no byte followed the
response -- and an idle pooled connection that receives any byte (a late second response, a body
after a 204, a 408 sent while idle) is closed at once, so no client can ever read another client's
response. Idle connections are closed after :data:`IDLE_SECONDS`, below the 15-75 s keep-alive of
most gateways (not uvicorn's 5 s), so a request rarely races the upstream closing its end; one the
upstream closes (FIN or RST) leaves the pool as the event loop reads that, and :meth:`Pool.take`
polls a connection's socket before handing it out, so only a close still on the wire can race a
request (the relay resends a replayable request that loses that race; docs/relay.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamwatch.proxy.upstream import UpstreamConnection

IDLE_SECONDS = 10.0

Origin = tuple[str, str, int]  # scheme, host, port (Route.origin)


class Pool:
    """Idle connections by origin, most recently used first."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle: dict[Origin, list[UpstreamConnection]] = {}

    def take(self, origin: Origin) -> UpstreamConnection | None:
        """An idle connection to ``origin`` that is still open, or None; one found closing (a
        FIN or a byte not yet read) is closed."""
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            conn.leave_pool()
            if conn.reusable_idle():
                return conn
            conn.abort()
        return None

    def put(self, origin: Origin, conn: UpstreamConnection) -> None:
        """Keep ``conn`` for the next request (the caller checked its response ended cleanly)."""
        self._idle.setdefault(origin, []).append(conn)
        conn.enter_pool(self, origin, IDLE_SECONDS)

    def discard(self, origin: Origin, conn: UpstreamConnection) -> None:
        idle = self._idle.get(origin)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()
