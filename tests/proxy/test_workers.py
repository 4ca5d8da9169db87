"""``serve --workers 2``: two processes share the proxy port, the parent alone serves the admin
port, and a scrape of its ``/metrics`` counts every stream exactly once, whichever worker served it."""

from __future__ import annotations

import asyncio

import psutil
import pytest

from tests.harness import (
    CHAT,
    LOOPBACK,
    raw_exchange,
    request_bytes,
    scrape,
    serve_process,
    simulator,
    until,
)

pytestmark = pytest.mark.e2e

STREAMS = 48  # one connection each: SO_REUSEPORT hashes them over both workers
BODY = {"model": "gpt-4o-mini", "stream": True}
SHORT = {"x-sim-tokens": "4", "x-sim-gap-ms": "5", "x-sim-jitter-ms": "0"}


class TestTwoWorkers:
    """Streams spread over two workers are all counted once in the single admin scrape."""

    async def test_scraped_totals_match_streams_sent(self) -> None:
        """48 streams over two workers: counted once each on /metrics (streams, output events and
        gaps), and each logged in one whole line though both workers write to the same stderr."""
        async with (
            simulator() as sim,
            serve_process("--upstream", sim, "--workers", "2") as serving,
        ):
            [started] = [e for e in serving.events("streamwatch.started") if "workers" in e]
            assert len(started["workers"]) == 2
            results = await asyncio.gather(
                *(
                    raw_exchange(serving.proxy_port, request_bytes(CHAT, BODY, SHORT))
                    for _ in range(STREAMS)
                )
            )
            statuses = [reads.parsed[0] for reads, _ in results]
            assert statuses == [200] * STREAMS

            # A client has its last byte just before its stream is recorded: wait for the records.
            async def recorded() -> bool:
                metrics = await scrape(serving.admin_port)
                return metrics.value("streamwatch_streams_total") >= STREAMS

            await until(recorded, what="every stream on /metrics")
            # Each worker writes its own lines to the shared stderr: every one must parse.
            await until(
                lambda: len(serving.events("stream.completed")) >= STREAMS,
                what="every stream's log line, whole",
            )
            metrics = await scrape(serving.admin_port)
            assert metrics.value("streamwatch_streams_total") == STREAMS
            assert metrics.value("streamwatch_streams_total", outcome="completed") == STREAMS
            assert metrics.value("streamwatch_requests_total", code="200") == STREAMS
            assert metrics.value("streamwatch_time_to_first_token_seconds_count") == STREAMS
            assert metrics.value("streamwatch_streams_active") == 0
            assert metrics.value("streamwatch_build_info") == 1
            assert len(serving.events("stream.completed")) == STREAMS
            # The per-read children go through each worker's file (inc), not the in-process
            # fast path that skips the lock: every output event and gap reaches the parent.
            outputs = [e["output_events"] for e in serving.events("stream.completed")]
            assert metrics.value("streamwatch_output_events_total") == sum(outputs) > 0
            gaps = metrics.value("streamwatch_inter_chunk_gap_seconds_count")
            assert gaps == sum(n - 1 for n in outputs)
            assert await serving.terminate() == 0


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class TestSelfMetricsPerWorker:
    """The parent's /metrics describes the workers too: process CPU summed, connections summed."""

    async def test_process_cpu_and_connections_cover_the_workers(self) -> None:
        """``process_cpu_seconds_total`` is at least the parent's and both workers' CPU read just
        before the scrape (a counter: it cannot be less), and a client connection held open on
        either worker shows in ``streamwatch_client_connections``, then leaves it."""
        async with (
            simulator() as sim,
            serve_process("--upstream", sim, "--workers", "2") as serving,
        ):
            [started] = [e for e in serving.events("streamwatch.started") if "workers" in e]
            pids = [serving.proc.pid, *started["workers"]]
            before = sum(_cpu_seconds(pid) for pid in pids)
            scraped = await scrape(serving.admin_port)
            assert scraped.value("process_cpu_seconds_total") >= before - 1e-6
            assert scraped.value("process_open_fds") > 0

            _, writer = await asyncio.open_connection(LOOPBACK, serving.proxy_port)

            async def connections(expected: float) -> bool:
                scraped = await scrape(serving.admin_port)
                return scraped.value("streamwatch_client_connections") == expected

            try:
                await until(lambda: connections(1), what="the open connection counted")
            finally:
                writer.close()
            await until(lambda: connections(0), what="the closed connection gone")
