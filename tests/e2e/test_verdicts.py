"""Issue 11: the verdicts a real ``streamwatch serve`` gives streams read by the official SDKs are true.

One regression class per finding: a delivered terminal frame settles the outcome (1), Anthropic's
placeholder output count is not a report (2), ``[DONE]`` in a Responses stream is not malformed (3),
nothing is added to the upstream's response headers (4), out-of-range usage is ignored and counted
(5), the simulator's tool-name frame waits its TTFT (7), and every stream accounts for the output it
delivered. Expectations come from what the upstream was scripted to send, never from streamwatch.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import pytest_asyncio

from streamwatch.simulator.scenario import Scenario, Send, steps
from tests.harness import (
    CHAT,
    FAST,
    Scrape,
    Scripted,
    Steps,
    chat_stream,
    raw_exchange,
    request_bytes,
    scrape,
    scripted,
    serve_process,
    simulator,
    until,
)
from tests.reliability.harness.proxy import ProxyProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

MESSAGES: Any = [{"role": "user", "content": "hello"}]
WORDS = ("one", "two", "three")
GAP_S = 0.03  # output events 30 ms apart: each in its own read, so tokens/s is defined


@dataclass
class Stack:
    """A ready ``streamwatch serve`` subprocess in front of one upstream, and SDK clients on it."""

    serve: ProxyProcess
    upstream: Scripted | None = None

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.serve.proxy_url}/v1", api_key="sk-test", max_retries=0
        )

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=self.serve.proxy_url, api_key="sk-test", max_retries=0
        )

    async def line(self, request_id: str) -> dict[str, Any]:
        """The ``stream.<outcome>`` log line of one request, once it is written."""

        def found() -> list[dict[str, Any]]:
            return [
                line
                for line in self.serve.events()
                if line.get("request_id") == request_id
                and str(line.get("event", "")).startswith("stream.")
            ]

        await until(lambda: bool(found()), within=10.0, what=f"the log line of {request_id}")
        return found()[0]

    async def metrics(self) -> Scrape:
        """A scrape taken once no stream is open any more."""

        async def closed() -> bool:
            m = await scrape(self.serve.admin_port)
            return m.value("streamwatch_streams_active") == 0

        await until(closed, within=10.0, what="every stream to be recorded")
        return await scrape(self.serve.admin_port)


@dataclass
class Delta:
    """What one test added to a shared streamwatch's counters: two scrapes, subtracted."""

    before: Scrape
    after: Scrape

    def value(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)

    def values(self, name: str, label: str, **labels: str) -> dict[str, float]:
        old = self.before.values(name, label, **labels)
        new = self.after.values(name, label, **labels)
        return {k: v - old.get(k, 0.0) for k, v in new.items() if v != old.get(k, 0.0)}


@contextlib.asynccontextmanager
async def measured(stack: Stack) -> AsyncIterator[list[Delta]]:
    """Yields a list that holds the block's :class:`Delta` once the block's streams have ended."""
    out: list[Delta] = []
    before = await stack.metrics()
    yield out
    out.append(Delta(before, await stack.metrics()))


def rid(name: str) -> dict[str, str]:
    return {"x-request-id": name}


def usage_chunk(completion_tokens: object) -> bytes:
    payload = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": completion_tokens, "total_tokens": 9},
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chat_with_usage(completion_tokens: object) -> list[tuple[float, bytes]]:
    """Role, three deltas ``GAP_S`` apart, finish ``stop``, a usage chunk, ``[DONE]``."""
    *body, done = chat_stream(WORDS, gap=GAP_S)
    return [*body, (0.0, usage_chunk(completion_tokens)), done]


def responses_stream_then_done() -> list[tuple[float, bytes]]:
    """A complete Responses stream as the simulator renders it, then ``data: [DONE]`` (LiteLLM)."""
    scenario = Scenario("openai_responses", "m", output_tokens=3)
    sends = [s for s in steps(scenario) if isinstance(s, Send)]
    return [*((0.0, s.data) for s in sends), (0.0, b"data: [DONE]\n\n")]


@dataclass(frozen=True)
class Delivery:
    """One scripted stream and what it delivered: output events, tokens and their source."""

    name: str
    steps: Steps
    outcome: str
    events: int
    tokens: int
    source: str


ERROR_FRAME = b'data: {"error": {"type": "server_error", "message": "boom"}}\n\n'
DELIVERIES = (
    Delivery("reported", chat_with_usage(7), "completed", 3, 7, "reported"),
    # An explicit zero is a report: never replaced by the three events' estimate.
    Delivery("reported-zero", chat_with_usage(0), "completed", 3, 0, "reported"),
    Delivery("no-usage", chat_stream(WORDS), "completed", 3, 3, "estimated"),
    Delivery("truncated", chat_stream(WORDS)[:-2], "truncated", 3, 3, "estimated"),
    Delivery(
        "error-frame",
        [*chat_stream(WORDS[:2])[:-2], (0.0, ERROR_FRAME)],
        "error_frame",
        2,
        2,
        "estimated",
    ),
)
OUT_OF_RANGE = {"u64-max": 2**64 - 1, "negative": -5, "float": 3.5}
HELD_OPEN = chat_stream(WORDS, gap=GAP_S)[:-2]  # no finish, no [DONE], and the body stays open

#: Every scripted case, chosen by request id: one upstream and one streamwatch serve them all.
SCRIPTS: dict[str, tuple[Steps, bool]] = {
    "done-then-hold": (chat_stream(WORDS), False),
    "left-early": (HELD_OPEN, False),
    "abort": (HELD_OPEN, False),
    "responses-done": (responses_stream_then_done(), True),
    "headers": (chat_stream(WORDS), True),
    **{f"alias-{i}": (chat_stream(WORDS), True) for i in range(5)},
    **{f"bad-usage-{name}": (chat_with_usage(count), True) for name, count in OUT_OF_RANGE.items()},
    **{f"delivery-{case.name}": (case.steps, True) for case in DELIVERIES},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scripted_stack() -> AsyncIterator[Stack]:
    async with (
        scripted([], variants=SCRIPTS) as upstream,
        serve_process("--upstream", upstream.url) as serve,
    ):
        yield Stack(serve, upstream)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim_stack() -> AsyncIterator[Stack]:
    async with simulator(FAST) as upstream, serve_process("--upstream", upstream) as serve:
        yield Stack(serve)


class TestTerminalFrameSettlesTheVerdict:
    """Finding 1: a stream whose terminal frame reached the client is completed, whoever closes first."""

    async def test_sdk_closing_at_done_before_upstream_ends_is_completed(
        self, scripted_stack: Stack
    ) -> None:
        """openai-python closes at ``[DONE]``; the upstream (like LiteLLM) has not ended its body."""
        stack = scripted_stack
        assert stack.upstream is not None
        closed = len(stack.upstream.closed_at)
        async with measured(stack) as delta, stack.openai() as client:
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, extra_headers=rid("done-then-hold")
            )
            chunks = [chunk async for chunk in stream]
            upstream = stack.upstream
            await until(lambda: len(upstream.closed_at) > closed, what="upstream to be closed")
            line = await stack.line("done-then-hold")
        assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
        assert (line["outcome"], line["close_cause"]) == ("completed", "client_abort")
        assert line["finish_reasons"] == ["stop"]
        assert delta[0].values("streamwatch_streams_total", "outcome") == {"completed": 1.0}

    async def test_leaving_before_the_terminal_frame_is_client_abort(
        self, scripted_stack: Stack
    ) -> None:
        stack = scripted_stack
        async with measured(stack) as delta, stack.openai() as client:
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, extra_headers=rid("left-early")
            )
            async for chunk in stream:
                if chunk.choices[0].delta.content == WORDS[-1]:
                    break
            await stream.close()
            line = await stack.line("left-early")
        assert (line["outcome"], line["output_events"]) == ("client_abort", 3)
        assert delta[0].values("streamwatch_streams_total", "outcome") == {"client_abort": 1.0}


class TestAnthropicPlaceholderUsage:
    """Finding 2: a Messages stream cut before ``message_delta`` estimates its output and flags it."""

    async def test_reset_mid_stream(self, sim_stack: Stack) -> None:
        headers = {
            **rid("anthropic-cut"),
            "x-sim-scenario": "reset",
            "x-sim-tokens": "8",  # reset after 4 text deltas (the scenario's middle)
            "x-sim-gap-ms": str(round(GAP_S * 1000)),
            "x-sim-jitter-ms": "0",
        }
        stack = sim_stack
        async with measured(stack) as delta, stack.anthropic() as client:
            with pytest.raises((anthropic.APIError, httpx.HTTPError, httpx2.HTTPError)):
                async with client.messages.stream(
                    model="claude-x", max_tokens=100, messages=MESSAGES, extra_headers=headers
                ) as stream:
                    _ = [text async for text in stream.text_stream]
            line = await stack.line("anthropic-cut")
        assert line["outcome"] == "upstream_reset"
        assert (line["output_events"], line["output_tokens"]) == (4, 4)
        assert line["output_tokens_estimated"] is True
        assert line["tokens_per_second"] is not None
        assert delta[0].value("streamwatch_tokens_total", type="output") == 0
        assert delta[0].values("streamwatch_delivered_output_tokens_total", "usage") == {
            "estimated": 4.0
        }


class TestDoneSentinelInResponses:
    """Finding 3: ``data: [DONE]`` after a Responses stream is known, never a malformed frame."""

    async def test_sdk_stream(self, scripted_stack: Stack) -> None:
        stack = scripted_stack
        async with measured(stack) as delta, stack.openai() as client:
            stream = await client.responses.create(
                model="m", input="hello", stream=True, extra_headers=rid("responses-done")
            )
            kinds = [event.type async for event in stream]
            line = await stack.line("responses-done")
        assert kinds[-1] == "response.completed"
        assert (line["outcome"], line["malformed_frames"]) == ("completed", 0)
        assert delta[0].value("streamwatch_analysis_errors_total", stage="malformed_frame") == 0


def end_to_end_headers(wire: bytes) -> dict[str, str]:
    """A response's header fields without those framing may change (hop-by-hop, RFC 9110 7.6.1)."""
    head = wire.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    hop = {"connection", "keep-alive", "transfer-encoding", "content-length"}
    fields = [line.split(":", 1) for line in head]
    return {k.strip().lower(): v.strip() for k, v in fields if k.strip().lower() not in hop}


class TestNothingAddedToHeaders:
    """Finding 4: the client gets the upstream's end-to-end headers and nothing else."""

    async def test_no_server_or_date_added(self, scripted_stack: Stack) -> None:
        assert scripted_stack.upstream is not None
        request = request_bytes(CHAT, {"model": "m", "stream": True}, rid("headers"))
        ended = lambda wire: wire.endswith(b"\r\n0\r\n\r\n")  # noqa: E731 (the chunked body's end)
        direct, _ = await raw_exchange(scripted_stack.upstream.port, request, stop_when=ended)
        proxied, _ = await raw_exchange(scripted_stack.serve.proxy_port, request, stop_when=ended)
        assert proxied.parsed[1] == direct.parsed[1]
        assert end_to_end_headers(bytes(proxied.raw)) == end_to_end_headers(bytes(direct.raw))


class TestUsageOutOfRange:
    """Finding 5: a usage count that is not a sane int is counted malformed and the estimate used."""

    @pytest.mark.parametrize("name", OUT_OF_RANGE)
    async def test_chat_usage(self, scripted_stack: Stack, name: str) -> None:
        stack = scripted_stack
        async with measured(stack) as delta, stack.openai() as client:
            stream = await client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=rid(f"bad-usage-{name}"),
            )
            _ = [chunk async for chunk in stream]
            line = await stack.line(f"bad-usage-{name}")
        assert (line["outcome"], line["malformed_frames"]) == ("completed", 1)
        assert (line["output_tokens"], line["output_tokens_estimated"]) == (3, True)
        assert line["duration_s"] > 0
        assert line["tokens_per_second"] is not None
        d = delta[0]
        assert d.value("streamwatch_analysis_errors_total", stage="malformed_frame") == 1
        assert d.value("streamwatch_tokens_total") == 0
        assert d.value("streamwatch_output_tokens_per_second_count") == 1
        assert d.values("streamwatch_delivered_output_tokens_total", "usage") == {"estimated": 3.0}


def models_labelled(scrape_: Scrape, prefix: str) -> set[str]:
    return {
        s.labels["model"] for s in scrape_.samples if s.labels.get("model", "").startswith(prefix)
    }


class TestModelLabelSlots:
    """Finding 6: only successful responses claim a ``model`` label slot, the response's model first."""

    async def test_rejected_requests_claim_no_slot(self, sim_stack: Stack) -> None:
        """Requests with invented models that the upstream answers 401 leave no model series."""
        for i in range(5):
            body = {"model": f"junk-{i}", "stream": True, "messages": MESSAGES}
            request = request_bytes(CHAT, body, {"x-sim-status": "401", **rid(f"junk-{i}")})
            got, _ = await raw_exchange(sim_stack.serve.proxy_port, request)
            assert got.status == 401
        assert models_labelled(await sim_stack.metrics(), "junk-") == set()

    async def test_response_model_is_preferred(self, scripted_stack: Stack) -> None:
        """Streams asking for invented aliases are counted under the model that answered ("m"),
        and the aliases take no label slot."""
        stack = scripted_stack
        async with measured(stack) as delta:
            for i in range(5):
                body = {"model": f"alias-{i}", "stream": True}
                await raw_exchange(
                    stack.serve.proxy_port, request_bytes(CHAT, body, rid(f"alias-{i}"))
                )
                await stack.line(f"alias-{i}")
        assert models_labelled(delta[0].after, "alias-") == set()
        assert delta[0].value("streamwatch_streams_total", model="m", outcome="completed") == 5


class TestToolNameWaitsForTTFT:
    """Finding 7: a simulated tool call's first output (the frame naming the tool) waits its TTFT."""

    async def test_ttft_of_a_tool_call(self, sim_stack: Stack) -> None:
        headers = {**rid("tool-ttft"), "x-sim-scenario": "tool_call", "x-sim-ttft-ms": "300"}
        async with sim_stack.openai() as client:
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, extra_headers=headers
            )
            _ = [chunk async for chunk in stream]
        line = await sim_stack.line("tool-ttft")
        assert line["tool_calls"] == 1
        assert line["ttft_s"] >= 0.3


class TestDeliveredOutput:
    """Every stream, whatever its outcome, reports the output it delivered, reported or estimated."""

    @pytest.mark.parametrize("case", DELIVERIES, ids=lambda c: c.name)
    async def test_log_line_and_metrics(self, scripted_stack: Stack, case: Delivery) -> None:
        stack = scripted_stack
        request_id = f"delivery-{case.name}"
        async with measured(stack) as delta:
            request = request_bytes(CHAT, {"model": "m", "stream": True}, rid(request_id))
            await raw_exchange(stack.serve.proxy_port, request)
            line = await stack.line(request_id)
        assert line["outcome"] == case.outcome
        assert (line["output_events"], line["output_tokens"]) == (case.events, case.tokens)
        assert line["output_tokens_estimated"] is (case.source == "estimated")
        d = delta[0]
        assert d.value("streamwatch_output_events_total") == case.events
        delivered = d.values("streamwatch_delivered_output_tokens_total", "usage")
        assert delivered == ({case.source: float(case.tokens)} if case.tokens else {})

    async def test_client_abort_mid_stream(self, scripted_stack: Stack) -> None:
        """A client that leaves after two deltas: the outcome says so, the delivery is counted."""
        stack = scripted_stack
        async with measured(stack) as delta:
            request = request_bytes(CHAT, {"model": "m", "stream": True}, rid("abort"))
            await raw_exchange(
                stack.serve.proxy_port,
                request,
                stop_when=lambda wire: b'"content": "two"' in wire,
            )
            line = await stack.line("abort")
        assert line["outcome"] == "client_abort"
        assert line["output_events"] >= 2
        assert line["output_tokens"] == line["output_events"]
        assert line["output_tokens_estimated"] is True
        delivered = delta[0].value("streamwatch_delivered_output_tokens_total", usage="estimated")
        assert delivered == line["output_tokens"]
