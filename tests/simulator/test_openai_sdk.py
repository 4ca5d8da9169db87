"""The official openai SDK parses the simulator's Chat Completions and Responses streams unchanged."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from streamwatch.simulator.scenario import Api, Plan, Scenario, plan

TOOLS_CHAT: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
]
TOOLS_RESPONSES: list[FunctionToolParam] = [
    {"type": "function", "name": "lookup", "parameters": {"type": "object"}, "strict": False}
]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]


def expected(api: Api, seed: int, **kwargs: Any) -> Plan:
    """The content the fixture's profile (12 tokens) produces for this seed and these settings."""
    return plan(Scenario(api, "m", output_tokens=12, seed=seed, **kwargs))


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-test", max_retries=0) as c:
        yield c


class TestChatCompletions:
    """Streamed chat text, tool calls and usage come out as the scenario planned them."""

    async def test_text_with_usage(self, client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-seed": "5"},
        )
        chunks = [chunk async for chunk in stream]
        want = expected("openai_chat", 5)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "".join(want.text)
        assert {c.model for c in chunks} == {"gpt-4o-mini"}
        assert {c.id for c in chunks} == {want.ids["chat"]}
        assert chunks[-2].choices[0].finish_reason == "stop"
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 12

    async def test_tool_call(self, client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            tools=TOOLS_CHAT,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-scenario": "tool_call", "x-sim-seed": "6"},
        )
        chunks = [chunk async for chunk in stream]
        calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
        assert calls[0].function is not None
        assert calls[0].function.name == "lookup"
        arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
        assert arguments == "".join(expected("openai_chat", 6, tool_call=True).tool_arguments)
        assert json.loads(arguments)["query"]
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"

    async def test_stream_helper(self, client: openai.AsyncOpenAI) -> None:
        async with client.chat.completions.stream(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-sim-seed": "8"},
        ) as stream:
            final = await stream.get_final_completion()
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content == "".join(expected("openai_chat", 8).text)

    async def test_length_cut_is_recognised(self, client: openai.AsyncOpenAI) -> None:
        with pytest.raises(openai.LengthFinishReasonError):
            async with client.chat.completions.stream(
                model="gpt-4o-mini",
                messages=MESSAGES,
                max_completion_tokens=5,
            ) as stream:
                await stream.get_final_completion()

    async def test_error_frame_raises(self, client: openai.AsyncOpenAI) -> None:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-sim-scenario": "error"},
        )
        with pytest.raises(openai.APIError, match="The server had an error"):
            async for _ in stream:
                pass

    async def test_pre_stream_rate_limit(self, client: openai.AsyncOpenAI) -> None:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                extra_headers={"x-sim-status": "429"},
            )
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.code == "rate_limit_exceeded"

    async def test_non_streaming(self, client: openai.AsyncOpenAI) -> None:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-sim-seed": "9", "x-sim-reasoning": "1"},
        )
        assert completion.choices[0].message.content == "".join(expected("openai_chat", 9).text)
        assert completion.usage is not None
        assert completion.usage.completion_tokens_details is not None
        assert completion.usage.completion_tokens_details.reasoning_tokens == 16


class TestResponses:
    """Responses events, the stream helper and its final response match the scenario."""

    async def test_create_stream_text(self, client: openai.AsyncOpenAI) -> None:
        stream = await client.responses.create(
            model="gpt-4.1-nano", input="hello", stream=True, extra_headers={"x-sim-seed": "5"}
        )
        events = [event async for event in stream]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
        assert "".join(deltas) == "".join(expected("openai_responses", 5).text)
        last = events[-1]
        assert last.type == "response.completed"
        assert last.response.usage is not None
        assert last.response.usage.output_tokens == 12
        assert last.response.model == "gpt-4.1-nano"

    async def test_stream_helper_reasoning_and_tool(self, client: openai.AsyncOpenAI) -> None:
        async with client.responses.stream(
            model="gpt-5-nano",
            input="hello",
            tools=TOOLS_RESPONSES,
            reasoning={"effort": "low", "summary": "auto"},
            extra_headers={"x-sim-scenario": "tool_call", "x-sim-seed": "11"},
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        want = expected("openai_responses", 11, tool_call=True, reasoning=True)
        assert "response.reasoning_summary_text.delta" in kinds
        reasoning, call = final.output
        assert reasoning.type == "reasoning"
        assert reasoning.summary[0].text == "".join(want.reasoning)
        assert call.type == "function_call"
        assert call.name == "lookup"
        assert call.arguments == "".join(want.tool_arguments)
        assert final.usage is not None
        assert final.usage.output_tokens_details.reasoning_tokens == 16

    async def test_max_output_tokens_is_incomplete(self, client: openai.AsyncOpenAI) -> None:
        # The helper's get_final_response() only accepts response.completed, so read the events.
        async with client.responses.stream(
            model="gpt-4.1-nano", input="hello", max_output_tokens=4
        ) as stream:
            events = [event async for event in stream]
        last = events[-1]
        assert last.type == "response.incomplete"
        assert last.response.incomplete_details is not None
        assert last.response.incomplete_details.reason == "max_output_tokens"
        assert last.response.usage is not None
        assert last.response.usage.output_tokens == 4

    async def test_error_event_is_yielded(self, client: openai.AsyncOpenAI) -> None:
        # The documented flat `error` event has no top-level `error` key, so the SDK yields it
        # as a typed event instead of raising (ERROR_FRAMES.md section 2a).
        stream = await client.responses.create(
            model="gpt-4.1-nano",
            input="hello",
            stream=True,
            extra_headers={"x-sim-scenario": "error"},
        )
        events = [event async for event in stream]
        assert events[-1].type == "error"
        assert events[-1].code == "server_error"
