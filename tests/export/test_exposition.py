"""The cheap exposition: the same bytes as prometheus-client's encoders, rendered in slices."""

from __future__ import annotations

import asyncio
import shutil
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from streamwatch.export.exposition import Exposition, render
from streamwatch.export.prometheus import Metrics
from tests.dashboards.mixin import skip_unless
from tests.export.test_series_budget import saturate

#: What scrapers send: none (curl), Prometheus 2 (OpenMetrics first), Prometheus 3 (allow-utf-8
#: names), and the text format 1.0.0.
ACCEPTS = (
    "",
    "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(autouse=True)
def _no_created_series() -> Iterator[None]:
    """As ``streamwatch serve`` runs: without prometheus-client's ``*_created`` samples."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    yield
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


def saturated() -> CollectorRegistry:
    """The series-budget registry, plus exemplars, a function gauge and label values that need
    escaping."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    saturate(metrics)
    metrics.ttft.labels("default", "client", "openai_chat", "other").observe(
        0.3, {"trace_id": TRACE}
    )
    metrics.requests.labels("default", "client", "openai_chat", "200").inc()
    metrics.client_connections.set_function(lambda: 3)
    odd = Counter("odd_total", "Help with \\ and\nnewline.", ["v"], registry=registry)
    odd.labels('quote " backslash \\ newline \n end').inc(2.5)
    odd.labels("exemplar").inc(1, {"trace_id": TRACE})
    Gauge("bare", "A label-less gauge.", registry=registry).set(1e21)
    Histogram("neg", "Negative buckets: no _sum.", buckets=(-1.0, 1.0), registry=registry)
    return registry


def stable(body: bytes) -> list[str]:
    """The exposition's lines without the process collector's samples (they move between
    renders)."""
    return [line for line in body.decode().splitlines() if not line.startswith("process_")]


class TestSameBytes:
    """For every format a scraper negotiates, the render equals prometheus-client's encoder."""

    @pytest.mark.parametrize("accept", ACCEPTS)
    async def test_saturated_registry(self, accept: str) -> None:
        """A saturated registry with exemplars, escapes and odd values renders byte for byte."""
        registry = saturated()
        encoder, content_type = choose_encoder(accept)
        assert Exposition.fast(content_type)
        ours = await render(Exposition(registry), content_type)
        assert stable(ours) == stable(encoder(registry))
        if "openmetrics" in content_type:
            assert f'# {{trace_id="{TRACE}"}} 0.3' in ours.decode()
        assert "_created" not in ours.decode()

    async def test_new_children_between_scrapes(self) -> None:
        """A label child created after the first render (its prefixes not yet cached) appears."""
        registry = saturated()
        exposition = Exposition(registry)
        encoder, content_type = choose_encoder("")
        await render(exposition, content_type)
        Counter("late_total", "Registered later.", ["k"], registry=registry).labels("a").inc()
        ours = await render(exposition, content_type)
        assert 'late_total{k="a"} 1.0' in ours.decode()
        assert stable(ours) == stable(encoder(registry))


class TestFallback:
    """Formats whose names would be rewritten are left to prometheus-client."""

    @pytest.mark.parametrize(
        "accept",
        [
            "application/openmetrics-text;version=1.0.0;escaping=dots",
            "application/openmetrics-text;version=1.0.0;escaping=values",
            "application/openmetrics-text;version=2.0.0",
        ],
    )
    def test_rewriting_formats_are_not_fast(self, accept: str) -> None:
        """Name escapings other than underscores and allow-utf-8, and OpenMetrics 2, are not
        rendered here."""
        assert not Exposition.fast(choose_encoder(accept)[1])

    def test_created_samples_are_not_fast(self) -> None:
        """With ``*_created`` samples on, prometheus-client renders (they are families of their
        own in the text format)."""
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
        assert not Exposition.fast(choose_encoder("")[1])


class TestSlices:
    """The render gives the event loop a turn whenever a slice has run."""

    async def test_loop_runs_between_slices(self) -> None:
        """With a zero slice, another task runs between every two parts of the render."""
        registry = saturated()
        turns = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.get_running_loop().create_task(ticker())
        parts = sum(1 for _ in Exposition(registry).parts(om=False))
        await render(Exposition(registry), "text/plain; version=0.0.4", slice_s=0)
        stop.set()
        await task
        assert parts > 1_000
        assert turns >= parts - 1


PROMTOOL = shutil.which("promtool")


class TestPromtool:
    """promtool's linter accepts the saturated text exposition."""

    async def test_check_metrics(self) -> None:
        """``promtool check metrics`` finds no problem in a saturated scrape."""
        skip_unless(PROMTOOL is not None, "promtool not on PATH (apt package prometheus)")
        assert PROMTOOL is not None
        body = await render(Exposition(saturated()), "text/plain; version=0.0.4")
        check = await asyncio.create_subprocess_exec(
            PROMTOOL, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        out, _ = await check.communicate(body)
        assert check.returncode == 0, out.decode()
