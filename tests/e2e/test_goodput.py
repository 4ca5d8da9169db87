"""Goodput through the real proxy: streams judged against their model's or their route's objectives
are counted as meeting them all or by the first objective they missed, on /metrics."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from streamwatch import metricspec as spec
from streamwatch.config import add_arguments, load_settings
from streamwatch.core.slo import Objectives
from tests.harness import (
    CHAT,
    raw_exchange,
    request_bytes,
    scrape,
    serve_process,
    simulator,
    streamwatch,
    until,
)

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


async def _judge(
    config: Path, text: str, upstream: str, *streams: tuple[str, int]
) -> tuple[float, dict[str, float], dict[str, float]]:
    """Run ``serve --config`` with ``text`` (its UPSTREAM filled in), send one stream per
    (model, TTFT ms), and return the judged total, met by model and missed by reason."""
    await asyncio.to_thread(config.write_text, text.replace("UPSTREAM", upstream))
    async with serve_process("--config", str(config)) as serve:
        for model, ttft_ms in streams:
            headers = {**BASE, "x-sim-scenario": "normal", "x-sim-ttft-ms": str(ttft_ms)}
            body = {"model": model, "stream": True, "messages": []}
            await raw_exchange(serve.proxy_port, request_bytes(CHAT, body, headers))

        async def all_ended() -> bool:
            s = await scrape(serve.admin_port)
            return s.value(spec.STREAMS.name) == len(streams)

        await until(all_ended, 10, what="every stream ended")
        s = await scrape(serve.admin_port)
    judged = s.value(spec.SLO_MET.name) + s.value(spec.SLO_MISSED.name)
    return (
        judged,
        s.values(spec.SLO_MET.name, spec.MODEL),
        s.values(spec.SLO_MISSED.name, spec.REASON),
    )


class TestModelObjectives:
    """A model named under ``slo_by_model:`` is judged by its own objectives, on any route."""

    async def test_model_objectives_replace_the_route_ones(self, tmp_path: Path) -> None:
        """With a 0.5 s TTFT objective for the route and 2 s for one model, an 800 ms first
        token meets the model's objective and misses the route's for another model."""
        text = "upstream: UPSTREAM\nslo_ttft: 0.5\nslo_by_model:\n  reasoning-model: {ttft: 2}\n"
        async with simulator() as upstream:
            judged, met, missed = await _judge(
                tmp_path / "c.yaml", text, upstream, ("reasoning-model", 800), ("chat-model", 800)
            )
        assert judged == 2
        assert met == {"reasoning-model": 1}
        assert missed == {"ttft": 1}

    async def test_only_named_models_are_judged(self, tmp_path: Path) -> None:
        """On a route without objectives, streams of a named model are judged and others are
        not."""
        text = "upstream: UPSTREAM\nslo_by_model:\n  chat-model: {ttft: 0.5}\n"
        async with simulator() as upstream:
            judged, met, missed = await _judge(
                tmp_path / "c.yaml",
                text,
                upstream,
                ("chat-model", 0),
                ("chat-model", 800),
                ("other-model", 800),
            )
        assert judged == 2
        assert met == {"chat-model": 1}
        assert missed == {"ttft": 1}


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

    def test_model_objectives(self, tmp_path: Path) -> None:
        """``slo_by_model:`` maps model names to objectives; the route ones stay as they were."""
        config = tmp_path / "c.yaml"
        config.write_text(
            "upstream: 'http://127.0.0.1:9'\nslo_tpot: 0.1\n"
            "slo_by_model:\n  o3: {ttft: 30, no_stall: true}\n  gpt-4o-mini: {tpot: 0.02}\n"
        )
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        settings = load_settings(parser.parse_args(["--config", str(config)]), {})
        goodput = settings.goodput()
        assert goodput is not None
        assert goodput.models == {
            "o3": Objectives(ttft_s=30.0, no_stall=True),
            "gpt-4o-mini": Objectives(tpot_s=0.02),
        }
        assert goodput.routes == {"default": Objectives(tpot_s=0.1)}
