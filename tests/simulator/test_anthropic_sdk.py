"""The official anthropic SDK's stream helper parses the simulator's Messages streams unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from streamwatch.simulator.scenario import Plan, Scenario, plan

MESSAGES: list[MessageParam] = [{"role": "user", "content": "hello"}]


def expected(seed: int, **kwargs: Any) -> Plan:
    """The content the fixture's profile (12 tokens) produces for this seed and these settings."""
    return plan(Scenario("anthropic_messages", "m", output_tokens=12, seed=seed, **kwargs))


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-test", max_retries=0) as c:
        yield c


class TestMessagesStream:
    """Text, tool use and thinking accumulate into the planned final message and usage."""

    async def test_text(self, client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=MESSAGES,
            extra_headers={"x-sim-seed": "5"},
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        want = expected(5)
        assert text == "".join(want.text)
        assert final.model == "claude-sonnet-4-6"
        assert final.id == want.ids["anthropic_message"]
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 12

    async def test_tool_use(self, client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=MESSAGES,
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
            extra_headers={"x-sim-scenario": "tool_call", "x-sim-seed": "6"},
        ) as stream:
            final = await stream.get_final_message()
        block = final.content[0]
        assert block.type == "tool_use"
        assert block.name == "lookup"
        assert block.input == json.loads("".join(expected(6, tool_call=True).tool_arguments))
        assert final.stop_reason == "tool_use"

    async def test_thinking(self, client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=2048,
            messages=MESSAGES,
            thinking={"type": "enabled", "budget_tokens": 1024},
            extra_headers={"x-sim-seed": "7"},
        ) as stream:
            final = await stream.get_final_message()
        want = expected(7, reasoning=True)
        thinking, text = final.content
        assert thinking.type == "thinking"
        assert thinking.thinking == "".join(want.reasoning)
        assert thinking.signature == want.ids["signature"]
        assert text.type == "text"
        assert text.text == "".join(want.text)
        assert final.usage.output_tokens == 12 + 16

    async def test_max_tokens(self, client: anthropic.AsyncAnthropic) -> None:
        async with client.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=3,
            messages=MESSAGES,
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "max_tokens"
        assert final.usage.output_tokens == 3

    async def test_error_frame_raises(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            async with client.messages.stream(
                model="claude-sonnet-4-6",
                max_tokens=1024,
                messages=MESSAGES,
                extra_headers={"x-sim-scenario": "error"},
            ) as stream:
                await stream.get_final_message()


class TestMessagesRequest:
    """Pre-stream errors and non-streaming requests look like the real API."""

    async def test_rate_limited(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.RateLimitError) as info:
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=1024,
                messages=MESSAGES,
                extra_headers={"x-sim-status": "429"},
            )
        assert info.value.response.headers["retry-after"] == "1"

    async def test_overloaded(self, client: anthropic.AsyncAnthropic) -> None:
        with pytest.raises(anthropic.InternalServerError) as info:
            await client.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=1024,
                messages=MESSAGES,
                extra_headers={"x-sim-status": "529"},
            )
        assert info.value.status_code == 529

    async def test_non_streaming(self, client: anthropic.AsyncAnthropic) -> None:
        message = await client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=MESSAGES,
            extra_headers={"x-sim-seed": "9"},
        )
        assert message.content[0].type == "text"
        assert message.content[0].text == "".join(expected(9).text)
