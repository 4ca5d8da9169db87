"""SIGTERM drains ``streamwatch serve``: the listener closes at once, a stream that ends before the
deadline ends cleanly, a longer one is aborted at the deadline (never a clean end) and logged as
``stream.shutdown``, and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from tests.harness import (
    CHAT,
    LOOPBACK,
    raw_exchange,
    request_bytes,
    serve_process,
    simulator,
    until,
)
from tests.reliability.harness.checks import LATE

pytestmark = pytest.mark.e2e

DRAIN_S = 3.0
SHORT = {"x-sim-tokens": "8", "x-sim-gap-ms": "50", "x-sim-jitter-ms": "0"}  # ends ~0.4 s in
LONG = {"x-sim-tokens": "60", "x-sim-gap-ms": "500", "x-sim-jitter-ms": "0"}  # would take 30 s


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(LOOPBACK, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


class TestGracefulDrain:
    """Short streams finish, long ones are cut at the deadline, new connections are refused."""

    async def test_sigterm(self) -> None:
        async with (
            simulator() as sim,
            serve_process("--upstream", sim, "--drain-timeout", str(DRAIN_S)) as serving,
        ):
            body = {"model": "m", "stream": True}
            short = asyncio.ensure_future(
                raw_exchange(serving.proxy_port, request_bytes(CHAT, body, SHORT))
            )
            long = asyncio.ensure_future(
                raw_exchange(serving.proxy_port, request_bytes(CHAT, body, LONG))
            )

            async def both_open() -> bool:
                url = f"{serving.admin_url}/debug/streams"
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return len((await response.json())["streams"]) == 2

            await until(both_open, what="both streams open")
            serving.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await until(lambda: refused(serving.proxy_port), within=LATE, what="refused connects")
            # At once: refused while the long stream is still open, i.e. before the drain deadline.
            assert not long.done(), "connects were accepted until the drain deadline"
            (short_reads, _), (long_reads, long_closed) = await asyncio.gather(short, long)
            code = await asyncio.to_thread(serving.wait)
            exited = time.monotonic()

        status, short_body, short_clean = short_reads.parsed
        assert (status, short_clean) == (200, True)
        assert short_body.endswith(b"data: [DONE]\n\n")
        status, long_body, long_clean = long_reads.parsed
        assert (status, long_clean) == (200, False)  # premature EOF or reset: never clean
        assert b"[DONE]" not in long_body
        # Cut at the deadline: not before it, and well before the 30 s the stream would take.
        assert DRAIN_S - 0.1 < long_closed - signalled < DRAIN_S + LATE
        assert code == 0
        assert exited - signalled < DRAIN_S + LATE
        [shutdown] = serving.events("stream.shutdown")
        assert shutdown["close_cause"] == "shutdown"
        assert shutdown["output_events"] >= 1
        assert len(serving.events("stream.completed")) == 1
        assert serving.events("streamwatch.stopped")[0]["aborted_streams"] == 1
