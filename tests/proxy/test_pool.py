"""The upstream pool never hands out a connection with something unread in its socket.

A FIN (or a stray byte) can reach the socket in the same event-loop iteration in which a request
takes the connection, before the loop has run the connection's read callback. ``Pool.take`` polls
the socket, so such a connection is closed instead of carrying the request: only a close still on
the wire can race a request (``tests/reliability/test_upstream_pool.py`` covers that race through
``streamwatch serve``). Here the loop is blocked on purpose between the FIN and ``take``.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator

import pytest

from streamwatch.proxy.pool import Origin, Pool
from streamwatch.proxy.upstream import UpstreamConnection, connect


@pytest.fixture
async def pooled() -> AsyncIterator[tuple[Pool, Origin, UpstreamConnection, asyncio.StreamWriter]]:
    """A pool holding one idle connection to a local server, and the server's end of it."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    origin: Origin = ("http", "127.0.0.1", server.sockets[0].getsockname()[1])
    conn = await connect(origin, None, 5.0)
    peer = await asyncio.wait_for(accepted.get(), 5.0)
    pool = Pool()
    pool.put(origin, conn)
    yield pool, origin, conn, peer
    pool.close()
    conn.abort()
    peer.close()
    server.close()
    await server.wait_closed()


def wait_readable(conn: UpstreamConnection) -> None:
    """Block (the event loop too) until the connection's socket has something to read."""
    assert conn.transport is not None
    poller = select.poll()
    poller.register(conn.transport.get_extra_info("socket").fileno(), select.POLLIN)
    assert poller.poll(5000), "the peer's FIN never arrived"


class TestTake:
    """``take`` hands out an idle connection only while nothing waits unread in its socket."""

    async def test_open_connection_is_reused(
        self, pooled: tuple[Pool, Origin, UpstreamConnection, asyncio.StreamWriter]
    ) -> None:
        """An idle connection the upstream keeps open is handed out."""
        pool, origin, conn, _ = pooled
        assert pool.take(origin) is conn

    @pytest.mark.parametrize("what", ["fin", "byte"])
    async def test_unread_fin_or_byte_is_not_reused(
        self, pooled: tuple[Pool, Origin, UpstreamConnection, asyncio.StreamWriter], what: str
    ) -> None:
        """A FIN or a byte the event loop has not read yet: the connection is closed, not reused."""
        pool, origin, conn, peer = pooled
        if what == "fin":
            peer.get_extra_info("socket").shutdown(socket.SHUT_WR)
        else:
            peer.write(b"H")  # an empty buffer: asyncio sends at once
        wait_readable(conn)  # no await since: the loop cannot have read it
        assert not conn.closed
        assert pool.take(origin) is None
        assert conn.closed
