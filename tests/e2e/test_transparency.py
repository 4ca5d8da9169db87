"""Transparency end to end: the official SDKs parse the same thing with or without streamwatch in the
path, and the client receives exactly the bytes the upstream wrote. That reads are never coalesced
or held back is proved in lockstep, not by timing, in
``tests/reliability/test_fidelity.py::TestNoBuffering``.

Raw byte identity is proven against a recording relay between streamwatch and the simulator, not by
comparing a direct run with a proxied run: the simulator stamps ``created`` with the wall clock, so
two runs with the same seed can differ in that field when they straddle a second boundary. The relay
records what the upstream actually put on the wire; h11 de-frames it; the client's de-framed body
must hash the same. That comparison is exact and does not depend on the simulator being
deterministic. The SDK comparison (direct vs proxied, same ``x-sim-seed``) drops the wall-clock
fields ``created``/``created_at`` and compares everything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from streamwatch.serve import Running
from streamwatch.simulator.scenario import Scenario, plan
from tests.harness import (
    CHAT,
    MESSAGES,
    RESPONSES,
    Recorder,
    raw_exchange,
    recorder,
    request_bytes,
    scrape,
    simulator,
    streamwatch,
)

pytestmark = pytest.mark.e2e

CHAT_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
ANTHROPIC_MESSAGES: list[MessageParam] = [{"role": "user", "content": "hello"}]
CHAT_TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
]
WALL_CLOCK = frozenset({"created", "created_at"})


def without_wall_clock(value: Any) -> Any:
    """A parsed result with the simulator's wall-clock stamps removed, everything else kept."""
    if isinstance(value, dict):
        return {k: without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [without_wall_clock(v) for v in value]
    return value


class Path:
    """The simulator behind a recording relay behind streamwatch, all on ephemeral ports."""

    def __init__(self, direct: str, relay: Recorder, running: Running) -> None:
        self.direct = direct
        self.relay = relay
        self.running = running
        self.proxied = f"http://127.0.0.1:{running.proxy_port}"


@pytest.fixture
async def path() -> AsyncIterator[Path]:
    async with simulator() as sim, recorder(sim) as relay, streamwatch(relay.url) as running:
        yield Path(sim, relay, running)


# -- SDK calls: each returns a JSON-able parse of the whole stream ----------------------------


async def chat_plain(base: str) -> Any:
    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=CHAT_MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-seed": "21"},
        )
        return [chunk.model_dump() async for chunk in stream]


async def chat_tools(base: str) -> Any:
    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=CHAT_MESSAGES,
            tools=CHAT_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-scenario": "tool_call", "x-sim-seed": "22"},
        )
        return [chunk.model_dump() async for chunk in stream]


async def responses_create(base: str) -> Any:
    async with openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0) as client:
        stream = await client.responses.create(
            model="gpt-5-nano", input="hello", stream=True, extra_headers={"x-sim-seed": "23"}
        )
        return [event.model_dump() async for event in stream]


async def responses_helper(base: str) -> Any:
    async with (
        openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-x", max_retries=0) as client,
        client.responses.stream(
            model="gpt-5-nano",
            input="hello",
            reasoning={"effort": "low", "summary": "auto"},
            extra_headers={"x-sim-seed": "24"},
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
        return {"kinds": kinds, "final": final.model_dump()}


async def _anthropic(base: str, **kwargs: Any) -> Any:
    async with (
        anthropic.AsyncAnthropic(base_url=base, api_key="sk-x", max_retries=0) as client,
        client.messages.stream(
            model="claude-sonnet-4-6", messages=ANTHROPIC_MESSAGES, **kwargs
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
        return {"kinds": kinds, "final": final.model_dump()}


async def anthropic_text(base: str) -> Any:
    return await _anthropic(base, max_tokens=1024, extra_headers={"x-sim-seed": "25"})


async def anthropic_tool(base: str) -> Any:
    return await _anthropic(
        base,
        max_tokens=1024,
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        extra_headers={"x-sim-scenario": "tool_call", "x-sim-seed": "26"},
    )


async def anthropic_thinking(base: str) -> Any:
    return await _anthropic(
        base,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"x-sim-seed": "27"},
    )


SDK_CALLS: dict[str, Callable[[str], Awaitable[Any]]] = {
    "chat": chat_plain,
    "chat-tools": chat_tools,
    "responses-create": responses_create,
    "responses-stream-helper": responses_helper,
    "anthropic-text": anthropic_text,
    "anthropic-tool-use": anthropic_tool,
    "anthropic-thinking": anthropic_thinking,
}


class TestSdkTransparency:
    """An official SDK parses exactly the same result through streamwatch as directly."""

    @pytest.mark.parametrize("call", SDK_CALLS.values(), ids=SDK_CALLS.keys())
    async def test_same_parse_direct_and_proxied(
        self, path: Path, call: Callable[[str], Awaitable[Any]]
    ) -> None:
        direct = await call(path.direct)
        proxied = await call(path.proxied)
        assert without_wall_clock(proxied) == without_wall_clock(direct)
        assert direct  # a parse with content, not two empty lists
        metrics = await scrape(path.running.admin_port)
        assert metrics.values("streamwatch_streams_total", "outcome") == {"completed": 1.0}

    async def test_proxied_parse_is_the_planned_content(self, path: Path) -> None:
        """The chat chunks parsed through the proxy carry the planned text and usage."""
        chunks = await chat_plain(path.proxied)
        want = plan(Scenario("openai_chat", "gpt-4o-mini", output_tokens=6, seed=21))
        text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
        assert text == "".join(want.text)
        assert chunks[-1]["usage"]["completion_tokens"] == 6


RAW_CASES = {
    "chat-usage": (CHAT, {"stream_options": {"include_usage": True}}, {}),
    "chat-tool": (CHAT, {}, {"x-sim-scenario": "tool_call"}),
    "responses-reasoning": (RESPONSES, {"reasoning": {"summary": "auto"}}, {}),
    "anthropic-thinking": (MESSAGES, {"thinking": {"type": "enabled"}}, {}),
    "error-frame": (CHAT, {}, {"x-sim-scenario": "error"}),
    "truncated": (MESSAGES, {}, {"x-sim-scenario": "truncate"}),
    "timestamped": (CHAT, {}, {"x-sim-timestamps": "1", "x-sim-gap-ms": "5"}),
}


class TestRawBytes:
    """The body the client receives hashes the same as the body the upstream wrote."""

    @pytest.mark.parametrize(("target", "extra", "headers"), RAW_CASES.values(), ids=RAW_CASES)
    async def test_body_is_what_upstream_sent(
        self, path: Path, target: str, extra: dict[str, Any], headers: dict[str, str]
    ) -> None:
        payload = {"model": "m", "stream": True, "max_tokens": 64, **extra}
        got, _ = await raw_exchange(
            path.running.proxy_port, request_bytes(target, payload, headers)
        )
        status, body, clean = got.parsed
        assert (status, clean) == (200, True)
        [sent] = path.relay.bodies()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(sent).hexdigest()
        assert body.count(b"\n\n") >= 5  # a real stream, not two empty bodies

    async def test_reset_reaches_client_as_unclean_end(self, path: Path) -> None:
        """An upstream reset mid-body: the client has the same prefix and no clean end."""
        request = request_bytes(CHAT, {"model": "m", "stream": True}, {"x-sim-scenario": "reset"})
        got, _ = await raw_exchange(path.running.proxy_port, request)
        status, body, clean = got.parsed
        assert (status, clean) == (200, False)
        [sent] = path.relay.bodies()
        assert body == sent
        assert b"[DONE]" not in body
