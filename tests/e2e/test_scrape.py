"""/metrics is rendered cheaply, a slice at a time, so a scrape of a saturated registry never stalls
a stream the proxy relays; collectors that are not prometheus-client metrics render off the loop."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
import zlib
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from tests.harness import (
    CHAT,
    LOOPBACK,
    MESSAGES,
    scrape,
    serve_process,
    simulator,
    streamwatch,
)

pytestmark = pytest.mark.e2e


class ThreadProbe:
    """A collector that notes which thread collected it."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        yield GaugeMetricFamily("probe_thread", "The thread that rendered this scrape.", value=1)


class TestScrapeOffTheLoop:
    """A collector the handler does not render itself is collected in a worker thread."""

    async def test_render_runs_off_the_loop_thread(self) -> None:
        """A custom collector on the served registry is collected on a thread other than the
        loop's, and its family is in the scrape."""
        probe = ThreadProbe()
        async with simulator() as upstream, streamwatch(upstream) as running:
            running.registry.register(probe)  # type: ignore[arg-type]
            text = (await scrape(running.admin_port)).text
        assert "probe_thread 1.0" in text
        assert probe.threads
        assert threading.get_ident() not in probe.threads

    async def test_openmetrics_and_name_filter(self) -> None:
        """OpenMetrics is negotiated by Accept, and ?name[]= restricts the families."""
        async with (
            simulator() as upstream,
            streamwatch(upstream) as running,
            aiohttp.ClientSession() as session,
            session.get(
                f"http://{LOOPBACK}:{running.admin_port}/metrics",
                params={"name[]": "streamwatch_build_info"},
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            ) as response,
        ):
            body = await response.text()
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert "streamwatch_build_info" in body
        assert "streamwatch_streams_active" not in body
        assert body.endswith("# EOF\n")


MODELS = [f"vendor-model-{i:02d}-2025-09-29" for i in range(50)]
CADENCE_MS = 10
EVENTS = 300


async def _stream(session: aiohttp.ClientSession, url: str, path: str, model: str) -> None:
    body: dict[str, object] = {"model": model, "stream": True, "messages": []}
    if path == MESSAGES:
        body["max_tokens"] = 16
    headers = {"x-sim-tokens": "2", "x-sim-ttft-ms": "0", "x-sim-gap-ms": "0"}
    async with session.post(url + path, json=body, headers=headers) as response:
        await response.read()


async def _probe_gaps(session: aiohttp.ClientSession, url: str) -> list[float]:
    """Arrival gaps (ms) of a stream whose upstream sends one event every CADENCE_MS; the stream
    must arrive whole."""
    headers = {
        "x-sim-tokens": str(EVENTS),
        "x-sim-ttft-ms": "0",
        "x-sim-gap-ms": str(CADENCE_MS),
        "x-sim-scenario": "normal",
    }
    body = {"model": "probe", "stream": True, "messages": []}
    arrivals: list[float] = []
    received = bytearray()
    async with session.post(url + CHAT, json=body, headers=headers) as response:
        async for chunk in response.content.iter_any():
            arrivals.append(time.perf_counter())
            received += chunk
    assert received.endswith(b"data: [DONE]\n\n")
    assert received.count(b'"content"') >= EVENTS
    return [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]


def _summary(gaps: list[float]) -> str:
    q = statistics.quantiles(gaps, n=100)
    return f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(gaps):.1f} ms over {len(gaps)} gaps"


@pytest.mark.slow
class TestScrapeStall:
    """At saturation, a stream keeps flowing while /metrics is scraped back to back."""

    async def test_gaps_during_repeated_scrapes(self) -> None:
        """3,900+ series are scraped in a loop while a 10 ms-cadence stream is relayed; the stream
        completes and the scrapes succeed. Its gaps with and without scrapes are reported, not
        asserted: on a shared 2-core box a wall-clock bound would test the neighbours."""
        async with (
            simulator() as upstream,
            serve_process("--upstream", upstream) as serve,
            aiohttp.ClientSession() as session,
        ):
            url = serve.proxy_url
            await asyncio.gather(
                *(_stream(session, url, path, m) for m in MODELS for path in (CHAT, MESSAGES))
            )
            series = len(
                [ln for ln in (await scrape(serve.admin_port)).text.splitlines() if ln[:1] != "#"]
            )
            assert series >= 3_900
            quiet = await _probe_gaps(session, url)

            scrapes: list[int] = []
            done = asyncio.Event()

            async def scrape_loop() -> None:
                # gzip as Prometheus asks, inflated in a thread and not parsed: doing either on
                # this process's loop would stall the simulated upstream and the probe's reader.
                async with aiohttp.ClientSession(auto_decompress=False) as raw:
                    while not done.is_set():
                        async with raw.get(
                            f"{serve.admin_url}/metrics", headers={"Accept-Encoding": "gzip"}
                        ) as response:
                            assert response.headers["Content-Encoding"] == "gzip"
                            body = await response.read()
                        scrapes.append(len(await asyncio.to_thread(zlib.decompress, body, 31)))

            scraper = asyncio.get_running_loop().create_task(scrape_loop(), name="scraper")
            try:
                busy = await _probe_gaps(session, url)
            finally:
                done.set()
                await scraper
        print(f"\nsaturated /metrics: {series} series, {scrapes[0]} bytes")
        print(f"10 ms stream, no scrapes:          {_summary(quiet)}")
        print(f"10 ms stream, {len(scrapes):3d} back-to-back scrapes: {_summary(busy)}")
        assert len(scrapes) >= 3
        assert min(scrapes) >= 400_000  # every scrape was a whole saturated exposition
