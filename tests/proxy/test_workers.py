"""``serve --workers 2``: two processes share the proxy port, the parent alone serves the admin
port, and a scrape of its ``/metrics`` counts every stream exactly once, whichever worker served it."""

from __future__ import annotations

import asyncio
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
    scrape,
    simulator,
    until,
)

pytestmark = pytest.mark.e2e

STREAMS = 48  # one connection each: SO_REUSEPORT hashes them over both workers
BODY = {"model": "gpt-4o-mini", "stream": True}
SHORT = {"x-sim-tokens": "4", "x-sim-gap-ms": "5", "x-sim-jitter-ms": "0"}


def _parent_started(serving: ServeProcess) -> dict[str, Any] | None:
    """The parent's start-up line (the workers log their own, without ``workers``)."""
    return next((e for e in serving.events("streamwatch.started") if "workers" in e), None)


async def _ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{LOOPBACK}:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


class TestTwoWorkers:
    """Streams spread over two workers are all counted once in the single admin scrape."""

    async def test_scraped_totals_match_streams_sent(self) -> None:
        async with simulator() as sim:
            proc = await run_cli(
                "serve", "--upstream", sim, "--workers", "2", "--log-format", "json",
                "--listen", f"{LOOPBACK}:0", "--admin-listen", f"{LOOPBACK}:0",
            )  # fmt: skip
            serving = ServeProcess(proc)
            try:
                await until(
                    lambda: _parent_started(serving) is not None or proc.returncode is not None,
                    within=20,
                    what="the parent's streamwatch.started",
                )
                started = _parent_started(serving)
                assert started is not None, "\n".join(serving.raw)
                workers = started["workers"]
                assert len(workers) == 2
                proxy_port = int(started["listen"].rpartition(":")[2])
                admin_port = int(started["admin"].rpartition(":")[2])
                await until(lambda: _ready(admin_port), within=10, what="/readyz")

                results = await asyncio.gather(
                    *(
                        raw_exchange(proxy_port, request_bytes(CHAT, BODY, SHORT))
                        for _ in range(STREAMS)
                    )
                )
                statuses = [h11_response(reads.wire)[0] for reads, _ in results]
                assert statuses == [200] * STREAMS

                metrics = await scrape(admin_port)
                assert metrics.value("streamwatch_streams_total") == STREAMS
                assert metrics.value("streamwatch_streams_total", outcome="completed") == STREAMS
                assert metrics.value("streamwatch_requests_total", code="200") == STREAMS
                assert metrics.value("streamwatch_time_to_first_token_seconds_count") == STREAMS
                assert metrics.value("streamwatch_streams_active") == 0
                assert metrics.value("streamwatch_build_info") == 1
                served = len(serving.events("stream.completed"))
                assert served == STREAMS
            finally:
                assert await serving.terminate() == 0
