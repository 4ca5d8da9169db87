"""Goodput through the real proxy: streams judged against their route's objectives are counted as
meeting them all or by the first objective they missed, on /metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from streamwatch import metricspec as spec
from streamwatch.config import add_arguments, load_settings
from streamwatch.core.slo import Objectives
from tests.harness import CHAT, raw_exchange, request_bytes, scrape, simulator, streamwatch, until

pytestmark = pytest.mark.e2e

BASE = {"x-sim-tokens": "4", "x-sim-ttft-ms": "0", "x-sim-gap-ms": "0"}


class TestGoodput:
    """Completed streams within the objectives count as met; others by their first miss."""

    async def test_met_and_missed_by_reason(self) -> None:
        """A fast completed stream is met; a truncated one misses on outcome; a slow first token
        misses on ttft."""
        async with simulator() as upstream, streamwatch(upstream, slo_ttft=0.5) as sw:
            for headers in (
                {**BASE, "x-sim-scenario": "normal"},
                {**BASE, "x-sim-scenario": "truncate"},
                {**BASE, "x-sim-scenario": "normal", "x-sim-ttft-ms": "800"},
            ):
                body = {"model": "gpt-4o-mini", "stream": True, "messages": []}
                await raw_exchange(sw.proxy_port, request_bytes(CHAT, body, headers))

            async def all_judged() -> bool:
                s = await scrape(sw.admin_port)
                return s.value(spec.SLO_MET.name) + s.value(spec.SLO_MISSED.name) == 3

            await until(all_judged, 10, what="three judged streams")
            scraped = await scrape(sw.admin_port)
        assert scraped.value(spec.SLO_MET.name, model="gpt-4o-mini") == 1
        assert scraped.values(spec.SLO_MISSED.name, spec.REASON) == {"outcome": 1, "ttft": 1}
        assert scraped.value(spec.SLO_MISSED.name, reason="tpot") == 0  # every reason at zero

    async def test_routes_without_objectives_are_not_judged(self) -> None:
        """With no objective set, no goodput series appear."""
        async with simulator() as upstream, streamwatch(upstream) as sw:
            body = {"model": "m", "stream": True, "messages": []}
            await raw_exchange(sw.proxy_port, request_bytes(CHAT, body, BASE))
            scraped = await scrape(sw.admin_port)
        samples = {sample.name for sample in scraped.samples}
        assert spec.SLO_MET.name not in samples
        assert spec.SLO_MISSED.name not in samples


class TestObjectivesConfig:
    """Objectives come from the global options, and a route's own ``slo:`` replaces them."""

    def test_route_objectives_win(self, tmp_path: Path) -> None:
        """A route's slo: is its objectives; other routes get the global ones."""
        config = tmp_path / "c.yaml"
        config.write_text(
            "slo_ttft: 2\n"
            "routes:\n"
            "  - {name: fast, prefix: /fast, upstream: 'http://127.0.0.1:9',"
            " slo: {ttft: 0.5, tpot: 0.05, no_stall: true}}\n"
            "  - {name: rest, prefix: /, upstream: 'http://127.0.0.1:9'}\n"
        )
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        settings = load_settings(parser.parse_args(["--config", str(config)]), {})
        fast, rest = settings.routes
        assert settings.objectives(fast) == Objectives(0.5, 0.05, no_stall=True)
        assert settings.objectives(rest) == Objectives(ttft_s=2.0)
