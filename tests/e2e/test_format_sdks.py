"""The official google-genai, boto3 (bedrock-runtime) and ollama clients stream the simulator's
Gemini, Bedrock and Ollama formats and get exactly the same result through ``streamwatch serve`` as
directly, and streamwatch reads each stream with its own interpreter.

Direct and proxied calls send the same ``x-sim-seed``; the simulator's wall-clock stamps
(``created_at``) and the HTTP response headers google-genai keeps (``sdk_http_response``: dates,
server names) are dropped before comparing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import boto3
import ollama
import pytest
from botocore.config import Config
from botocore.exceptions import EventStreamError
from google import genai
from google.genai import types

from streamwatch.serve import Running
from tests.harness import scrape, simulator, streamwatch, until

pytestmark = [
    pytest.mark.e2e,
    # google-genai's own aiohttp session subclass; the warning is about its code, not ours
    pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning"),
]

DROPPED = frozenset({"created_at", "sdk_http_response", "ResponseMetadata"})
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def comparable(value: Any) -> Any:
    """A parsed result without wall-clock stamps and transport metadata, everything else kept."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


class Paths:
    """The simulator, and streamwatch in front of it, on ephemeral loopback ports."""

    def __init__(self, direct: str, running: Running) -> None:
        self.direct = direct
        self.running = running
        self.proxied = f"http://127.0.0.1:{running.proxy_port}"


@pytest.fixture
async def paths() -> AsyncIterator[Paths]:
    async with simulator() as sim, streamwatch(sim) as running:
        yield Paths(sim, running)


# -- google-genai -----------------------------------------------------------------------------


def _gemini(base: str, headers: dict[str, str]) -> genai.Client:
    options = types.HttpOptions(base_url=base, headers=headers)
    return genai.Client(api_key="sim-key", http_options=options)


async def _gemini_stream(
    base: str, headers: dict[str, str], config: types.GenerateContentConfig | None = None
) -> Any:
    client = _gemini(base, headers)
    try:
        stream = await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Weather in Paris?", config=config
        )
        return [chunk.model_dump(mode="json") async for chunk in stream]
    finally:
        await client.aio.aclose()


async def gemini_text(base: str) -> Any:
    return await _gemini_stream(base, {"x-sim-seed": "31"})


async def gemini_thinking_tool(base: str) -> Any:
    declaration = types.FunctionDeclaration(name="lookup", parameters={"type": "object"})
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[declaration])],
        thinking_config=types.ThinkingConfig(include_thoughts=True),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    return await _gemini_stream(base, {"x-sim-seed": "32", "x-sim-scenario": "tool_call"}, config)


# -- boto3 bedrock-runtime (synchronous: run in a thread, the servers share this loop) ------------


def _bedrock(base: str, headers: dict[str, str]) -> Any:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=base,
        region_name="us-east-1",
        aws_access_key_id="AKIASIMULATED",
        aws_secret_access_key="simulated",  # noqa: S106 (a fake credential for a local simulator)
        config=Config(retries={"max_attempts": 1}),
    )

    def add_headers(request: Any, **_: Any) -> None:
        request.headers.update(headers)

    client.meta.events.register("before-send.bedrock-runtime.*", add_headers)
    return client


def _converse(base: str, headers: dict[str, str]) -> list[Any]:
    """Every event the client yields; an exception frame raises where it arrives (botocore's
    EventStreamError), and is kept as the last item."""
    client = _bedrock(base, headers)
    response = client.converse_stream(
        modelId=MODEL_ID,
        messages=[{"role": "user", "content": [{"text": "Weather in Paris?"}]}],
        toolConfig={"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {}}}}]},
    )
    events: list[Any] = []
    try:
        events.extend(response["stream"])
    except EventStreamError as exc:
        events.append({"error": exc.response["Error"]})
    finally:
        response["stream"].close()  # a raised exception frame leaves the connection in use
        client.close()
    return events


def _invoke(base: str, headers: dict[str, str]) -> list[Any]:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 512,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    client = _bedrock(base, headers)
    try:
        response = client.invoke_model_with_response_stream(modelId=MODEL_ID, body=json.dumps(body))
        return [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    finally:
        client.close()


async def bedrock_converse_tool(base: str) -> Any:
    headers = {"x-sim-seed": "33", "x-sim-scenario": "tool_call"}
    return await asyncio.to_thread(_converse, base, headers)


async def bedrock_invoke_thinking(base: str) -> Any:
    return await asyncio.to_thread(_invoke, base, {"x-sim-seed": "34"})


async def bedrock_converse_error(base: str) -> Any:
    headers = {"x-sim-seed": "35", "x-sim-scenario": "error"}
    return await asyncio.to_thread(_converse, base, headers)


# -- ollama -------------------------------------------------------------------------------------


async def ollama_chat(base: str) -> Any:
    async with ollama.AsyncClient(host=base, headers={"x-sim-seed": "36"}) as client:
        stream = await client.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            think=True,
            stream=True,
        )
        return [part.model_dump(mode="json") async for part in stream]


async def ollama_generate_tool(base: str) -> Any:
    async with ollama.AsyncClient(host=base, headers={"x-sim-seed": "37"}) as client:
        stream = await client.generate(model="llama3.2", prompt="Weather in Paris?", stream=True)
        return [part.model_dump(mode="json") async for part in stream]


SDK_CALLS: dict[str, tuple[Callable[[str], Awaitable[Any]], str, str]] = {
    # name: (call, api label, outcome)
    "genai-text": (gemini_text, "gemini", "completed"),
    "genai-thinking-tool": (gemini_thinking_tool, "gemini", "completed"),
    "boto3-converse-tool": (bedrock_converse_tool, "bedrock_converse", "completed"),
    "boto3-invoke-thinking": (bedrock_invoke_thinking, "bedrock_invoke", "completed"),
    "boto3-converse-exception": (bedrock_converse_error, "bedrock_converse", "error_frame"),
    "ollama-chat-thinking": (ollama_chat, "ollama_chat", "completed"),
    "ollama-generate": (ollama_generate_tool, "ollama_generate", "completed"),
}


class TestSdkTransparency:
    """Each official client parses the same result through streamwatch as directly."""

    @pytest.mark.parametrize(("call", "api", "outcome"), SDK_CALLS.values(), ids=SDK_CALLS.keys())
    async def test_same_parse_direct_and_proxied(
        self, paths: Paths, call: Callable[[str], Awaitable[Any]], api: str, outcome: str
    ) -> None:
        direct = await call(paths.direct)
        proxied = await call(paths.proxied)
        assert comparable(proxied) == comparable(direct)
        assert len(direct) >= 2  # a parse with content, not two empty lists

        async def recorded() -> bool:
            m = await scrape(paths.running.admin_port)
            return m.value("streamwatch_streams_total") == 1

        await until(recorded, what="the proxied stream recorded")
        m = await scrape(paths.running.admin_port)
        assert m.values("streamwatch_streams_total", "api") == {api: 1.0}
        assert m.values("streamwatch_streams_total", "outcome") == {outcome: 1.0}
        assert m.value("streamwatch_output_events_total") > 0
        assert m.value("streamwatch_analysis_errors_total") == 0
