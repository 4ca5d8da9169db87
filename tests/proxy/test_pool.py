"""The upstream pool keeps and hands out only connections that still read and have nothing unread.

An idle pooled connection must see a stray byte or the upstream's close at once (the pool's
guarantee), whatever state the exchange that used it last left its reading in. And a FIN (or a
stray byte) can reach the socket in the same event-loop iteration in which a request takes the
connection, before the loop has run its read callback: ``Pool.take`` polls the socket, so such a
connection is closed instead of carrying the request, and only a close still on the wire can race
a request (``tests/reliability/test_upstream_pool.py`` covers that race through
``streamwatch serve``).
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterator

import pytest

from streamwatch.proxy.pool import Origin, Pool
from streamwatch.proxy.upstream import UpstreamConnection, connect
from tests.harness import LOOPBACK, until
from tests.reliability.harness.checks import LATE


class TestPausedThenPooled:
    """A connection pooled while its reading was paused (a slow client when the response ended)."""

    async def test_stray_byte_closes_it(self) -> None:
        """The stray byte an upstream sends on the idle connection is seen: closed, never handed
        out (a connection left paused would keep it unread for the next request, which would
        then wait for a response the pool can never read)."""
        sent = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await sent.wait()
            writer.write(b"X")
            await writer.drain()
            await reader.read()  # until streamwatch's side closes
            writer.close()

        server = await asyncio.start_server(serve, LOOPBACK, 0)
        origin: Origin = ("http", LOOPBACK, server.sockets[0].getsockname()[1])
        pool = Pool()
        try:
            conn = await connect(origin, None, LATE)
            conn.pause_reading(True)  # what a full client write buffer does to its upstream
            pool.put(origin, conn)
            sent.set()
            await until(lambda: conn.closed, within=LATE, what="the pooled connection to close")
            assert conn.extra  # closed for the byte it read, not by the pool's idle timer
            assert pool.take(origin) is None
        finally:
            pool.close()
            server.close()
            await server.wait_closed()


@pytest.fixture
async def pooled() -> AsyncIterator[tuple[Pool, Origin, UpstreamConnection, asyncio.StreamWriter]]:
    """A pool holding one idle connection to a local server, and the server's end of it."""
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    origin: Origin = ("http", LOOPBACK, server.sockets[0].getsockname()[1])
    conn = await connect(origin, None, LATE)
    peer = await asyncio.wait_for(accepted.get(), LATE)
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
    assert poller.poll(int(LATE * 1000)), "the peer's FIN or byte never arrived"


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
        wait_readable(conn)  # the loop is blocked here: it cannot have read it
        assert not conn.closed
        assert pool.take(origin) is None
        assert conn.closed
