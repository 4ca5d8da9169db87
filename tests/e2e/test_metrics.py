"""A scripted traffic mix through streamwatch gives exactly the /metrics the simulator's scripts
imply, and a stall and the output events so far show on /metrics while the stream is still open.

Expectations are computed from what the simulator sends (its ``plan`` of each scenario and the
``x-sim-*`` headers), never read back from streamwatch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from streamwatch.serve import Running
from streamwatch.simulator.scenario import Api, Scenario, plan
from tests.harness import (
    CHAT,
    MESSAGES,
    raw_exchange,
    request_bytes,
    scrape,
    simulator,
    streamwatch,
    until,
)
from tests.reliability.harness.checks import LATE

pytestmark = pytest.mark.e2e

# Stall threshold, both phases: long against what a loaded box adds between two tokens (0.3 s
# counted spurious stalls in a parallel run; gaps of 2.1 s were seen with a busy core), and the
# scripted stalls long against it.
STALL_S = 3.0
TOKENS = 6  # the harness profile's answer length
REASONING_TOKENS = 4
# Output events 50 ms apart: each arrives in its own read even on a loaded CI box, so streams with
# two or more output events always have a decode-rate observation (first and last differ).
TIMING = {"x-sim-gap-ms": "50", "x-sim-jitter-ms": "0"}


@dataclass(frozen=True)
class Case:
    """One scripted stream and what the simulator's script says the proxy must have seen."""

    name: str
    path: str
    payload: dict[str, Any]
    headers: dict[str, str]
    outputs: int  # output events that reach the proxy
    outcome: str
    finish: str | None = None
    reported_output_tokens: int = 0  # from the stream's own usage report
    error_type: str | None = None
    stall: str | None = None
    abort_after_first_output: bool = False


def planned_outputs(api: Api, **kwargs: Any) -> int:
    """Output events (reasoning, text, tool-argument deltas) the simulator's plan streams."""
    content = plan(Scenario(api, "m", output_tokens=TOKENS, **kwargs))
    return len(content.reasoning) + len(content.text) + len(content.tool_arguments)


CHAT_BODY = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]

MIX = (
    Case("normal", CHAT, CHAT_BODY, {}, TOKENS, "completed", "stop", TOKENS),
    Case(
        "tool_call",
        CHAT,
        {**CHAT_BODY, "tools": TOOLS},
        {"x-sim-scenario": "tool_call"},
        # The chunk that names the function is a tool-call delta too (docs/architecture.md "output event"),
        # though the simulator's plan does not time it as output; then the argument deltas.
        1 + planned_outputs("openai_chat", tool_call=True),
        "completed",
        "tool_calls",
        planned_outputs("openai_chat", tool_call=True),
    ),
    Case(
        "reasoning",
        MESSAGES,
        {"model": "m", "stream": True, "max_tokens": 1024, "thinking": {"type": "enabled"}},
        {"x-sim-reasoning-tokens": str(REASONING_TOKENS)},
        # thinking + text deltas
        planned_outputs("anthropic_messages", reasoning=True, reasoning_tokens=REASONING_TOKENS),
        "completed",
        "end_turn",
        REASONING_TOKENS + TOKENS,
    ),
    Case(
        "max_tokens",
        CHAT,
        {**CHAT_BODY, "max_tokens": 3},
        {},
        3,
        "completed",
        "length",
        3,
    ),
    Case(
        "error_frame",
        CHAT,
        CHAT_BODY,
        {"x-sim-error-after": "3"},
        3,
        "error_frame",
        error_type="server_error",
    ),
    Case("truncated", CHAT, CHAT_BODY, {"x-sim-truncate-after": "3"}, 3, "truncated"),
    Case("reset", CHAT, CHAT_BODY, {"x-sim-reset-after": "3"}, 3, "upstream_reset"),
    Case(
        "client_abort",
        CHAT,
        CHAT_BODY,
        {"x-sim-gap-ms": "3000"},  # the client leaves long before the second output event
        1,
        "client_abort",
        abort_after_first_output=True,
    ),
    Case(
        "first_token_stall",
        CHAT,
        CHAT_BODY,
        {"x-sim-ttft-ms": str(int(STALL_S * 2000))},
        TOKENS,
        "completed",
        "stop",
        TOKENS,
        stall="before_first_token",
    ),
)
MID_STALL = Case(
    "mid_stream_stall",
    CHAT,
    CHAT_BODY,
    # Stalled for 2.5x the threshold: seen live while it lasts, however late the scrape comes.
    {"x-sim-stall-after": "3", "x-sim-stall-ms": str(int(STALL_S * 2500))},
    TOKENS,
    "completed",
    "stop",
    TOKENS,
    stall="mid_stream",
)


async def run(port: int, case: Case) -> None:
    request = request_bytes(case.path, case.payload, {**TIMING, **case.headers})
    stop = (lambda wire: b'"delta":{"content":' in wire) if case.abort_after_first_output else None
    got, _ = await raw_exchange(port, request, stop_when=stop)
    status, _, clean = got.parsed
    assert status == 200, case.name
    assert clean is (case.outcome not in ("upstream_reset", "client_abort")), case.name


@pytest.fixture
async def proxy() -> AsyncIterator[Running]:
    async with (
        simulator() as sim,
        streamwatch(
            sim,
            stall_threshold=STALL_S,
            first_token_stall_threshold=STALL_S,
            watchdog_interval=0.05,
        ) as running,
    ):
        yield running


class TestScriptedMix:
    """Every outcome, finish reason, error type, stall phase and histogram count is exact."""

    async def test_metrics_match_the_scripts(self, proxy: Running) -> None:
        port = proxy.proxy_port
        rate_limited = request_bytes(CHAT, CHAT_BODY, {"x-sim-status": "429"})
        await asyncio.gather(*(run(port, case) for case in MIX), raw_exchange(port, rate_limited))

        # The mid-stream stall, watched live: counted and flagged while the stream still hangs.
        stalled = asyncio.get_running_loop().create_task(run(port, MID_STALL))
        observed: dict[str, float] = {}

        async def stall_visible() -> bool:
            now = await scrape(proxy.admin_port)
            observed["stalls"] = now.value("streamwatch_stalls_total", phase="mid_stream")
            observed["stalled"] = now.value("streamwatch_streams_stalled")
            # A scrape is rendered in slices, not as one snapshot: the counter and the gauge can
            # come from either side of the stall's start, so wait for one that shows both.
            return observed["stalls"] >= 1 and observed["stalled"] >= 1

        await until(stall_visible, within=LATE, what="a live mid-stream stall")
        assert not stalled.done()
        assert observed == {"stalls": 1.0, "stalled": 1.0}
        await stalled

        async def unstalled() -> bool:
            return (await scrape(proxy.admin_port)).value("streamwatch_streams_active") == 0

        await until(unstalled, what="all streams closed")
        m = await scrape(proxy.admin_port)
        cases = (*MIX, MID_STALL)
        with_output = [c for c in cases if c.outputs]
        assert m.value("streamwatch_streams_stalled") == 0
        assert m.values("streamwatch_streams_total", "outcome") == dict(
            Counter(c.outcome for c in cases)
        )
        assert m.values("streamwatch_finish_reasons_total", "finish_reason") == dict(
            Counter(c.finish for c in cases if c.finish)
        )
        assert m.values("streamwatch_error_frames_total", "error_type") == {"server_error": 1.0}
        assert m.values("streamwatch_stalls_total", "phase") == {
            "before_first_token": 1.0,
            "mid_stream": 1.0,
        }
        assert m.values("streamwatch_requests_total", "code") == {
            "200": float(len(cases)),
            "429": 1.0,
        }
        assert m.value("streamwatch_output_events_total") == sum(c.outputs for c in cases)
        assert m.value("streamwatch_tokens_total", type="output") == sum(
            c.reported_output_tokens for c in cases
        )
        gaps = sum(c.outputs for c in cases) - len(with_output)
        histograms = {
            "streamwatch_time_to_first_byte_seconds": len(cases),
            "streamwatch_time_to_first_token_seconds": len(with_output),
            "streamwatch_inter_chunk_gap_seconds": gaps,
            "streamwatch_output_tokens_per_second": sum(1 for c in cases if c.outputs >= 2),
            "streamwatch_stream_duration_seconds": len(cases),
        }
        counts = {h: m.value(h + "_count") for h in histograms}
        assert counts == {h: float(n) for h, n in histograms.items()}
        # Exactly the two stalled waits (first token after 0.6 s, gap of 0.7 s) exceed 0.5 s.
        assert m.value("streamwatch_inter_chunk_gap_seconds_bucket", le="0.5") == gaps - 1
        assert m.value("streamwatch_time_to_first_token_seconds_bucket", le="0.5") == (
            len(with_output) - 1
        )
        assert m.value("streamwatch_analysis_errors_total") == 0


class TestLiveOutputs:
    """Output events reach /metrics at the watchdog's next tick while their stream is still open."""

    async def test_outputs_before_a_hang_are_counted_during_it(self) -> None:
        """Three output events, then the upstream hangs (far below the stall threshold, so no
        other event delivers them): all three are counted while the client still waits."""
        hang = {"x-sim-stall-after": "3", "x-sim-stall-ms": "60000", **TIMING}
        async with (
            simulator() as sim,
            streamwatch(sim, stall_threshold=600.0, watchdog_interval=0.05) as running,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", running.proxy_port)
            try:
                writer.write(request_bytes(CHAT, CHAT_BODY, hang))
                received = b""
                while received.count(b'"delta":{"content":') < 3:
                    received += await asyncio.wait_for(reader.read(65536), LATE)

                async def counted() -> bool:
                    m = await scrape(running.admin_port)
                    return m.value("streamwatch_output_events_total") == 3

                await until(counted, within=LATE, what="three output events on /metrics")
                m = await scrape(running.admin_port)
                assert m.value("streamwatch_streams_active") == 1
            finally:
                writer.close()
