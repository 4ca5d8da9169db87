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
    ServeProcess,
    h11_response,
    raw_exchange,
    request_bytes,
    run_cli,
    simulator,
    until,
)

pytestmark = pytest.mark.e2e

DELAY_S = 2.0
BODY = {"model": "m", "stream": True}
SHORT = {"x-sim-tokens": "3", "x-sim-gap-ms": "10", "x-sim-jitter-ms": "0"}
LONG = {
    "x-sim-tokens": "20",
    "x-sim-gap-ms": "250",
    "x-sim-jitter-ms": "0",
}  # ~5 s: outlives the delay


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


def _started(serving: ServeProcess, workers: int) -> dict[str, Any] | None:
    """The start-up line of the process that owns the admin port (the parent with workers)."""
    lines = serving.events("streamwatch.started")
    if workers > 1:
        lines = [line for line in lines if "workers" in line]
    return lines[0] if lines else None


class TestShutdownDelay:
    """SIGTERM -> /readyz 503 at once -> new connections served for the delay -> drain -> exit 0."""

    @pytest.mark.parametrize("workers", [1, 2])
    async def test_sigterm_sequence(self, workers: int) -> None:
        async with simulator() as sim:
            proc = await run_cli(
                "serve", "--upstream", sim, "--log-format", "json",
                "--listen", f"{LOOPBACK}:0", "--admin-listen", f"{LOOPBACK}:0",
                "--workers", str(workers), "--shutdown-delay", str(DELAY_S),
                "--drain-timeout", "20",
            )  # fmt: skip
            serving = ServeProcess(proc)
            try:
                await until(
                    lambda: _started(serving, workers) is not None or proc.returncode is not None,
                    within=30,
                    what="streamwatch.started",
                )
                started = _started(serving, workers)
                assert started is not None, "\n".join(serving.raw)
                port = int(started["listen"].rpartition(":")[2])
                admin = f"http://{LOOPBACK}:{started['admin'].rpartition(':')[2]}"
                readyz = f"{admin}/readyz"

                async def ready() -> bool:
                    return await status(readyz) == 200

                await until(ready, within=15, what="/readyz 200")
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

                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()

                async def not_ready() -> bool:
                    return await status(readyz) == 503

                await until(not_ready, within=1.0, what="/readyz 503 right after SIGTERM")
                # A request routed here during the delay is accepted and served in full.
                reads, _ = await raw_exchange(port, request_bytes(CHAT, BODY, SHORT))
                accepted_at = time.monotonic() - signalled
                code, body, clean = h11_response(reads.wire)
                assert (code, clean) == (200, True)
                assert body.endswith(b"data: [DONE]\n\n")
                assert accepted_at < DELAY_S

                # Then the drain: new connections are refused, not before the delay has passed.
                await until(lambda: refused(port), within=DELAY_S + 5, what="refused connects")
                assert time.monotonic() - signalled >= DELAY_S - 0.2
                long_reads, _ = await long
                code = await serving.wait(within=30)
            finally:
                await serving.terminate()

        status_code, long_body, long_clean = h11_response(long_reads.wire)
        assert (status_code, long_clean) == (200, True)  # the long stream finished, not cut
        assert long_body.endswith(b"data: [DONE]\n\n")
        assert code == 0
        names = [line["event"] for line in serving.lines]
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
