"""Every stream format through ``streamwatch serve``: the simulator speaks Gemini (SSE and JSON
array), Bedrock ConverseStream and InvokeModelWithResponseStream, Ollama chat and generate, Cohere v2
and legacy completions; each behaviour (normal, tool call, reasoning, budget cut, error frame, cut,
reset, stall) gives exactly the metrics the simulator's script implies, under that format's ``api``.

Expectations come from the simulator's ``plan`` of each scenario and the ``x-sim-*`` headers, never
from streamwatch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamwatch.simulator.scenario import Api, Scenario, plan
from tests.harness import (
    raw_exchange,
    request_bytes,
    scrape,
    serve_process,
    simulator,
    streamwatch,
    until,
)
from tests.reliability.harness.checks import LATE

pytestmark = pytest.mark.e2e

# The scripted stall is long against the threshold, and the threshold long against what a loaded
# box adds between two 50 ms tokens (0.3 s counted spurious stalls in a parallel run).
STALL_S = 1.0
TOKENS = 6  # the harness profile's answer length
MIDDLE = TOKENS // 2  # where the simulator interrupts or cuts (x-sim-scenario)
REASONING_TOKENS = 4
TIMING = {"x-sim-gap-ms": "50", "x-sim-jitter-ms": "0", "x-sim-reasoning-tokens": "4"}
STALL = {"x-sim-stall-after": str(MIDDLE), "x-sim-stall-ms": str(int(STALL_S * 2000) + 100)}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


@dataclass(frozen=True)
class Format:
    """One API as a client calls it, and its vocabulary in streamwatch's labels."""

    api: Api
    path: str
    body: dict[str, Any]
    model: str  # the model label: the stream's, else the request body's or path's
    finish: dict[str, str]  # behaviour -> normalised finish reason
    error_type: str
    timings: tuple[str, ...] = ()  # durations the upstream reports in its final frames
    whole_tool_call: bool = False  # the call arrives as one object, not argument deltas
    has_tools: bool = True
    has_reasoning: bool = True


def _finish(normal: str, tool: str, cut: str) -> dict[str, str]:
    return {"normal": normal, "tool_call": tool, "reasoning": normal, "max_tokens": cut}


OLLAMA_TIMINGS = ("ollama_total", "ollama_load", "ollama_prompt_eval", "ollama_eval")
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]}
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BEDROCK = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"  # as botocore encodes it
FORMATS = (
    Format(
        "openai_completions",
        "/v1/completions",
        {"model": "m", "prompt": "Hi", "stream": True, "stream_options": {"include_usage": True}},
        "m",
        _finish("stop", "stop", "length"),
        "server_error",
        has_tools=False,
        has_reasoning=False,
    ),
    Format(
        "gemini",
        GEMINI_PATH + "?alt=sse",
        GEMINI_BODY,
        "gemini-2.5-flash",
        _finish("stop", "stop", "max_tokens"),
        "unavailable",
        whole_tool_call=True,
    ),
    Format(
        "gemini_json",
        GEMINI_PATH,
        GEMINI_BODY,
        "gemini-2.5-flash",
        _finish("stop", "stop", "max_tokens"),
        "unavailable",
        whole_tool_call=True,
    ),
    Format(
        "bedrock_converse",
        BEDROCK + "/converse-stream",
        {"messages": [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]},
        MODEL_ID,  # Converse streams never name it: the path does
        _finish("end_turn", "tool_use", "max_tokens"),
        "model_stream_error_exception",
        timings=("bedrock_latency",),
    ),
    Format(
        "bedrock_invoke",
        BEDROCK + "/invoke-with-response-stream",
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512, "messages": MESSAGES},
        MODEL_ID,
        _finish("end_turn", "tool_use", "max_tokens"),
        "model_stream_error_exception",
        timings=("bedrock_invocation_latency", "bedrock_first_byte_latency"),
    ),
    Format(
        "ollama_chat",
        "/api/chat",
        {"model": "llama3.2", "messages": MESSAGES},
        "llama3.2",
        _finish("stop", "stop", "length"),
        "error",
        timings=OLLAMA_TIMINGS,
        whole_tool_call=True,
    ),
    Format(
        "ollama_generate",
        "/api/generate",
        {"model": "llama3.2", "prompt": "Weather in Paris?"},
        "llama3.2",
        _finish("stop", "stop", "length"),
        "error",
        timings=OLLAMA_TIMINGS,
        whole_tool_call=True,
    ),
    Format(
        "cohere_v2",
        "/v2/chat",
        {"model": "command-a", "messages": MESSAGES, "stream": True},
        "command-a",
        # Cohere's error channel is message-end itself: its finish reason ERROR is one too.
        {**_finish("complete", "tool_call", "max_tokens"), "error": "error"},
        "error",
    ),
)
BEHAVIOURS = (
    "normal",
    "tool_call",
    "reasoning",
    "max_tokens",
    "error",
    "truncate",
    "reset",
    "stall",
)
OUTCOME = {"error": "error_frame", "truncate": "truncated", "reset": "upstream_reset"}


def _content(fmt: Format, behaviour: str) -> Any:
    return plan(
        Scenario(
            fmt.api,
            "m",
            output_tokens=TOKENS,
            tool_call=behaviour == "tool_call",
            reasoning=behaviour == "reasoning",
            reasoning_tokens=REASONING_TOKENS,
            max_tokens=MIDDLE if behaviour == "max_tokens" else None,
        )
    )


def outputs(fmt: Format, behaviour: str) -> int:
    """Output events the proxy must count (DESIGN "output event": the frame naming a tool too)."""
    if behaviour in OUTCOME:
        return MIDDLE  # interrupted before output event MIDDLE
    content = _content(fmt, behaviour)
    reasoning = len(content.reasoning) if fmt.has_reasoning else 0
    if behaviour != "tool_call":
        return reasoning + len(content.text)
    if not fmt.has_tools:
        return len(content.tool_arguments)  # legacy completions streams the arguments as text
    if fmt.whole_tool_call:
        return 1
    return 1 + len(content.tool_arguments)


def reported_output_tokens(fmt: Format, behaviour: str) -> int:
    """What the stream's own usage report says (nothing for an interrupted stream)."""
    if behaviour in OUTCOME:
        return 0
    content = _content(fmt, behaviour)
    if fmt.api == "openai_completions":
        return len(content.text or content.tool_arguments)
    if fmt.api in ("gemini", "gemini_json"):  # candidatesTokenCount: thoughts are separate
        return len(content.text) + (behaviour == "tool_call")
    return int(content.output_token_count)


async def run(port: int, fmt: Format, behaviour: str) -> None:
    headers = {**TIMING, "x-sim-scenario": behaviour}
    if behaviour == "stall":
        headers = {**TIMING, **STALL}
    request = request_bytes(fmt.path, fmt.body, headers)
    got, _ = await raw_exchange(port, request)
    status, _, clean = got.parsed
    assert status == 200, (fmt.api, behaviour)
    assert clean is (behaviour != "reset"), (fmt.api, behaviour)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.api)
class TestEveryFormat:
    """Each behaviour of each format gives exact outcome, finish, error, stall and output counts."""

    async def test_metrics_match_the_scripts(self, fmt: Format) -> None:
        async with (
            simulator() as sim,
            streamwatch(
                sim,
                stall_threshold=STALL_S,
                first_token_stall_threshold=LATE,  # no script delays its first token
                watchdog_interval=0.05,
            ) as running,
        ):
            await asyncio.gather(*(run(running.proxy_port, fmt, b) for b in BEHAVIOURS))

            async def all_closed() -> bool:
                m = await scrape(running.admin_port)
                return m.value("streamwatch_streams_total", api=fmt.api) == len(BEHAVIOURS)

            await until(all_closed, what="every stream recorded")
            m = await scrape(running.admin_port)
        api = {"api": fmt.api}
        assert m.values("streamwatch_streams_total", "api") == {fmt.api: len(BEHAVIOURS)}
        assert m.values("streamwatch_streams_total", "model") == {fmt.model: len(BEHAVIOURS)}
        assert m.values("streamwatch_streams_total", "outcome", **api) == dict(
            Counter(OUTCOME.get(b, "completed") for b in BEHAVIOURS)
        )
        finishes = [
            fmt.finish.get(b, fmt.finish["normal"])
            for b in BEHAVIOURS
            if b not in OUTCOME or b in fmt.finish
        ]
        assert m.values("streamwatch_finish_reasons_total", "finish_reason", **api) == dict(
            Counter(finishes)
        )
        assert m.values("streamwatch_error_frames_total", "error_type", **api) == {
            fmt.error_type: 1.0
        }
        assert m.values("streamwatch_stalls_total", "phase", **api) == {"mid_stream": 1.0}
        assert m.value("streamwatch_output_events_total", **api) == sum(
            outputs(fmt, b) for b in BEHAVIOURS
        )
        assert m.value("streamwatch_tokens_total", type="output", **api) == sum(
            reported_output_tokens(fmt, b) for b in BEHAVIOURS
        )
        assert m.value("streamwatch_time_to_first_token_seconds_count", **api) == len(BEHAVIOURS)
        assert m.value("streamwatch_analysis_errors_total", **api) == 0
        completed = sum(1 for b in BEHAVIOURS if b not in OUTCOME)  # only final frames report
        assert m.values(
            "streamwatch_upstream_reported_seconds_count", "timing", **api
        ) == dict.fromkeys(fmt.timings, completed)


class TestRouteApi:
    """A route's ``api:`` key reads streams, and their request bodies, on paths that name no API
    (a gateway's own paths)."""

    async def test_ollama_under_a_gateway_path(self, tmp_path: Path) -> None:
        config = tmp_path / "routes.yaml"
        async with simulator() as sim:
            config.write_text(
                "routes:\n"
                f"  - {{name: plain, prefix: /plain, upstream: '{sim}/api', strip_prefix: true}}\n"
                f"  - {{name: typed, prefix: /typed, upstream: '{sim}/api', strip_prefix: true,"
                " api: ollama_chat}\n"
            )
            async with serve_process("--config", str(config)) as serving:
                body = {"model": "llama3.2", "messages": MESSAGES}
                for path in ("/plain/chat", "/typed/chat"):
                    got, _ = await raw_exchange(serving.proxy_port, request_bytes(path, body))
                    assert got.status == 200

                async def recorded() -> bool:
                    m = await scrape(serving.admin_port)
                    return m.value("streamwatch_requests_total", route="plain") == 1 and (
                        m.value("streamwatch_streams_total", route="typed") == 1
                    )

                await until(recorded, what="both requests recorded")
                m = await scrape(serving.admin_port)
                lines = [e for e in serving.events() if e.get("event") == "stream.completed"]
        # The key also makes the request body read, though the path names no API.
        assert [(line["route"], line["request_model"]) for line in lines] == [("typed", "llama3.2")]
        # Without the key the NDJSON body on /chat is forwarded but not analyzed.
        assert m.value("streamwatch_streams_total", route="plain") == 0
        assert m.values("streamwatch_streams_total", "api", route="typed") == {"ollama_chat": 1.0}
        assert m.value("streamwatch_output_events_total", route="typed") == TOKENS
        assert m.values("streamwatch_finish_reasons_total", "finish_reason", route="typed") == {
            "stop": 1.0
        }
