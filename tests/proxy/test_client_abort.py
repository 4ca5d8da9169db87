"""A client that goes away makes streamwatch close the upstream connection at once, in every phase,
and the stream is recorded as ``client_abort`` with what was measured before it left.

The upstream is a bare asyncio server (:class:`tests.harness.Scripted`), not the simulator: it
streams on a script, then hangs, and records the moment it reads EOF on its connection.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.core.support import chat_chunk
from tests.harness import (
    CHAT,
    Scrape,
    raw_exchange,
    request_bytes,
    scrape,
    scripted,
    streamwatch,
    until,
)
from tests.reliability.harness.checks import LATE

pytestmark = pytest.mark.e2e

# The proxy reacts to the client's FIN on the next loop turn (measured: a few ms). The bound only
# has to tell that reaction from the slower outcome it prevents, and nothing else here would ever
# close the upstream (no upstream timeout is armed below 900 s), so it is the suite's LATE bound:
# a loaded box that deschedules this process for a second must not fail the test.
CLOSE_BOUND_S = LATE

REQUEST = request_bytes(CHAT, {"model": "m", "stream": True})
ROLE = chat_chunk({"role": "assistant", "content": ""})


def deltas(wire: bytes) -> int:
    return wire.count(b'"delta": {"content": "w')


async def streams(admin_port: int) -> Scrape:
    async def closed() -> bool:
        return (await scrape(admin_port)).value("streamwatch_streams_active") == 0

    await until(closed, what="the stream to be recorded")
    return await scrape(admin_port)


class TestClientAbort:
    """The upstream connection closes as soon as the client leaves; partial timings stay."""

    async def test_mid_stream(self) -> None:
        words = [(0.05, chat_chunk({"content": f"w{i}"})) for i in range(3)]
        async with (
            scripted([(0.0, ROLE), *words], finish=False) as upstream,
            streamwatch(upstream.url) as running,
        ):
            _, left = await raw_exchange(
                running.proxy_port, REQUEST, stop_when=lambda wire: deltas(wire) == 3
            )
            await until(lambda: bool(upstream.closed_at), within=LATE, what="upstream EOF")
            assert upstream.closed_at[0] - left < CLOSE_BOUND_S
            m = await streams(running.admin_port)
        assert m.values("streamwatch_streams_total", "outcome") == {"client_abort": 1.0}
        assert m.value("streamwatch_time_to_first_token_seconds_count") == 1
        assert m.value("streamwatch_inter_chunk_gap_seconds_count") == 2
        assert m.value("streamwatch_output_events_total") == 3

    async def test_waiting_for_the_first_byte(self) -> None:
        """Headers forwarded, no body byte yet: the client leaves during the TTFT wait."""
        async with (
            scripted([], finish=False) as upstream,
            streamwatch(upstream.url) as running,
        ):
            _, left = await raw_exchange(
                running.proxy_port, REQUEST, stop_when=lambda wire: b"\r\n\r\n" in wire
            )
            await until(lambda: bool(upstream.closed_at), within=LATE, what="upstream EOF")
            assert upstream.closed_at[0] - left < CLOSE_BOUND_S
            m = await streams(running.admin_port)
        assert m.values("streamwatch_streams_total", "outcome") == {"client_abort": 1.0}
        assert m.value("streamwatch_time_to_first_byte_seconds_count") == 0
        assert m.value("streamwatch_time_to_first_token_seconds_count") == 0
        assert m.value("streamwatch_stream_duration_seconds_count") == 1

    async def test_waiting_for_response_headers(self) -> None:
        """Upstream has the request but has not answered: the pending request is abandoned."""
        async with (
            scripted([(0.0, ROLE)], head_delay=30.0) as upstream,
            streamwatch(upstream.url) as running,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.proxy_port)
            writer.write(REQUEST)
            await until(lambda: bool(upstream.requests), what="upstream to get the request")
            writer.close()
            await writer.wait_closed()
            left = time.monotonic()
            await until(lambda: bool(upstream.closed_at), within=LATE, what="upstream EOF")
            assert upstream.closed_at[0] - left < CLOSE_BOUND_S
            assert await reader.read() == b""  # nothing was sent to the departed client
