"""``--shutdown-delay``: the Kubernetes-safe shutdown through the real process. On SIGTERM /readyz
answers 503 at once, the proxy keeps accepting and serving new connections for the delay (while
endpoints are being removed), then the drain starts: the listener closes, open streams finish, and
the process exits 0. With ``--workers 2`` the parent does the same in front of its workers."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.harness import (
    CHAT,
    LOOPBACK,
    raw_exchange,
    request_bytes,
    run_cli,
    serve_process,
    simulator,
    until,
)
from tests.reliability.harness.checks import LATE

pytestmark = pytest.mark.e2e

DELAY_S = 3.0
BODY = {"model": "m", "stream": True}
SHORT = {"x-sim-tokens": "3", "x-sim-gap-ms": "10", "x-sim-jitter-ms": "0"}
LONG = {
    "x-sim-tokens": "24",
    "x-sim-gap-ms": "250",
    "x-sim-jitter-ms": "0",
}  # ~6 s: outlives the delay


async def status(url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(LOOPBACK, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


class TestShutdownDelay:
    """SIGTERM -> /readyz 503 at once -> new connections served for the delay -> drain -> exit 0."""

    @pytest.mark.parametrize("workers", [1, 2])
    async def test_sigterm_sequence(self, workers: int) -> None:
        async with (
            simulator() as sim,
            serve_process(
                "--upstream", sim, "--workers", str(workers), "--shutdown-delay", str(DELAY_S),
                "--drain-timeout", "20",
            ) as serving,
        ):  # fmt: skip
            [started] = [
                e for e in serving.events("streamwatch.started") if workers == 1 or "workers" in e
            ]
            port = serving.proxy_port
            admin = serving.admin_url
            readyz = f"{admin}/readyz"
            long = asyncio.ensure_future(raw_exchange(port, request_bytes(CHAT, BODY, LONG)))
            listing: dict[str, Any] = {}

            async def long_is_open() -> bool:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{admin}/debug/streams") as response,
                ):
                    listing.update(await response.json())
                return len(listing["streams"]) == 1

            await until(long_is_open, within=10, what="the long stream in /debug/streams")
            assert listing["version"] == 1
            if workers > 1:  # gathered from the worker that serves it, tagged with its pid
                assert listing["streams"][0]["worker"] in started["workers"]
                assert listing["workers"] == listing["workers_answered"] == workers

            assert serving.proc is not None
            serving.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            async def not_ready() -> bool:
                return await status(readyz) == 503

            await until(not_ready, within=LATE, what="/readyz 503 after SIGTERM")
            # A request routed here during the delay is accepted and served in full. Accepted at
            # all proves the order: /readyz said 503 while the listener still took connections.
            reads, _ = await raw_exchange(port, request_bytes(CHAT, BODY, SHORT))
            code, body, clean = reads.parsed
            assert (code, clean) == (200, True)
            assert body.endswith(b"data: [DONE]\n\n")

            # Then the drain: new connections are refused, not before the delay has passed.
            await until(lambda: refused(port), within=DELAY_S + LATE, what="refused connects")
            assert time.monotonic() - signalled >= DELAY_S - 0.2
            long_reads, _ = await long
            code = await asyncio.to_thread(serving.wait, 30)

        status_code, long_body, long_clean = long_reads.parsed
        assert (status_code, long_clean) == (200, True)  # the long stream finished, not cut
        assert long_body.endswith(b"data: [DONE]\n\n")
        assert code == 0
        names = [line["event"] for line in serving.events()]
        assert names.index("streamwatch.leaving") < names.index("streamwatch.draining")
        assert not serving.events("stream.shutdown")


class TestShutdownDelayConfig:
    """The delay is an option like every other: flag, environment, validated."""

    async def test_negative_delay_is_refused(self) -> None:
        """A negative delay stops start-up with status 2 naming the option."""
        proc = await run_cli(
            "serve", "--upstream", "http://127.0.0.1:9", "--listen", f"{LOOPBACK}:0",
            env={"STREAMWATCH_SHUTDOWN_DELAY": "-1"},
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 2
        assert "--shutdown-delay (STREAMWATCH_SHUTDOWN_DELAY)" in stderr.decode()
