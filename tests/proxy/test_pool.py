"""The upstream pool keeps only connections that still read: an idle pooled connection must see a
stray byte or the upstream's close at once (the pool's guarantee), whatever state the exchange
that used it last left its reading in."""

from __future__ import annotations

import asyncio

from streamwatch.proxy.pool import Origin, Pool
from streamwatch.proxy.upstream import connect
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
