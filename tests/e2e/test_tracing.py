"""Traces end to end: client → streamwatch (tracing from OTEL_* settings) → simulator, spans
exported over OTLP/HTTP protobuf to a real receiver in the test, exemplars on /metrics.

Spans are batched; ``Stack.stop`` runs streamwatch's graceful stop, whose closer flushes them, so
every assertion on spans comes after it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from streamwatch.export import semconv as sc
from streamwatch.serve import Running, start, stop
from streamwatch.simulator.server import make_app
from tests.e2e.otlp import Receiver, otlp_receiver
from tests.harness import (
    CHAT,
    FAST,
    LOOPBACK,
    MESSAGES,
    RESPONSES,
    refusing_port,
    run_cli,
    serve_process,
    settings_for,
    until,
)

pytestmark = pytest.mark.e2e

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SPAN_KIND_CLIENT = 3
STATUS_UNSET, STATUS_ERROR = 0, 2
STALL_THRESHOLD = 0.15


def traceparent(trace_id: str = CLIENT_TRACE, span_id: str = CLIENT_SPAN, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def chat(model: str = "gpt-4o-mini", text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@dataclass
class Stack:
    """Receiver, header-recording simulator and streamwatch with tracing from ``OTEL_*``."""

    running: Running
    receiver: Receiver
    upstream_headers: list[CIMultiDict[str]]
    stopped: bool = False

    @property
    def proxy(self) -> str:
        return f"http://{LOOPBACK}:{self.running.proxy_port}"

    async def post(
        self, path: str, payload: Mapping[str, Any], headers: Mapping[str, str] = {}
    ) -> tuple[int, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.proxy + path, json=payload, headers=dict(headers)) as response,
        ):
            try:
                return response.status, await response.read()
            except aiohttp.ClientPayloadError:
                return response.status, b""  # an upstream reset reaches us as a reset

    async def stop(self) -> None:
        """Graceful stop: drains, then the tracing closer flushes every span to the receiver."""
        if not self.stopped:
            self.stopped = True
            await stop(self.running, drain_timeout=1.0)


@contextlib.asynccontextmanager
async def recording_simulator() -> AsyncIterator[tuple[str, list[CIMultiDict[str]]]]:
    """The simulator with a middleware that keeps every request's headers as upstream saw them."""
    seen: list[CIMultiDict[str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(CIMultiDict(request.headers))
        response: web.StreamResponse = await handler(request)
        return response

    app = make_app(FAST)
    app.middlewares.append(record)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def traced(upstream: str | None = None, **overrides: Any) -> AsyncIterator[Stack]:
    async with otlp_receiver() as receiver, recording_simulator() as (simulated, seen):
        settings = settings_for(
            upstream or simulated,
            stall_threshold=STALL_THRESHOLD,
            first_token_stall_threshold=5.0,
            watchdog_interval=0.02,
            **overrides,
        )
        running = await start(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
        stack = Stack(running, receiver, seen)
        try:
            yield stack
        finally:
            await stack.stop()


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with traced() as s:
        yield s


class TestStreamSpans:
    """Each stream shape leaves one CLIENT span with the GenAI attributes, events and status."""

    async def test_normal_stream_continues_the_client_trace(self, stack: Stack) -> None:
        """A normal stream's span is a child of the client's span and parents the upstream call."""
        status, _ = await stack.post(
            CHAT,
            chat(stream_options={"include_usage": True}),
            {
                "traceparent": traceparent(),
                "tracestate": "vendor=abc",
                "baggage": "tenant=t1",
                "x-request-id": "req-normal",
            },
        )
        assert status == 200
        await stack.stop()
        span = stack.receiver.one(**{sc.SW_REQUEST_ID: "req-normal"})
        assert span.name == "chat gpt-4o-mini"
        assert span.kind == SPAN_KIND_CLIENT
        assert (span.trace_id, span.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
        assert span.status_code == STATUS_UNSET
        attrs = span.attributes
        assert {k: attrs[k] for k in (
            sc.GEN_AI_OPERATION_NAME, sc.GEN_AI_PROVIDER_NAME, sc.OPENAI_API_TYPE,
            sc.GEN_AI_REQUEST_MODEL, sc.GEN_AI_RESPONSE_MODEL, sc.GEN_AI_REQUEST_STREAM,
            sc.GEN_AI_RESPONSE_FINISH_REASONS, sc.HTTP_REQUEST_METHOD, sc.HTTP_RESPONSE_STATUS_CODE,
            sc.URL_PATH, sc.SERVER_ADDRESS, sc.SW_OUTCOME, sc.SW_ROUTE, sc.SW_OUTPUT_TOKENS_ESTIMATED,
        )} == {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "openai.api.type": "chat_completions", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini", "gen_ai.request.stream": True,
            "gen_ai.response.finish_reasons": ("stop",), "http.request.method": "POST",
            "http.response.status_code": 200, "url.path": CHAT, "server.address": LOOPBACK,
            "streamwatch.outcome": "completed", "streamwatch.route": "default",
            "streamwatch.output_tokens_estimated": False,
        }  # fmt: skip
        assert "gen_ai.system" not in attrs
        assert attrs[sc.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
        assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == FAST.output_tokens
        assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert attrs[sc.SERVER_PORT] > 0
        assert attrs[sc.SW_OUTPUT_EVENTS] == FAST.output_tokens
        assert attrs[sc.SW_OUTPUT_TOKENS] == FAST.output_tokens  # reported
        assert 0 < attrs[sc.SW_TTFB] <= attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        ((_, at, event),) = span.events_named(sc.EVENT_FIRST_TOKEN)
        assert event[sc.SW_TTFT] == attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        assert span.start_ns < at <= span.end_ns
        (upstream,) = stack.upstream_headers
        assert upstream["traceparent"] == traceparent(CLIENT_TRACE, span.span_id, "01")
        assert upstream["tracestate"] == "vendor=abc"
        assert upstream["baggage"] == "tenant=t1"

    async def test_without_client_context_a_new_trace_reaches_upstream(self, stack: Stack) -> None:
        """No traceparent: the span is a root and upstream sees the new trace's context."""
        await stack.post(RESPONSES, {"model": "gpt-5-nano", "stream": True, "input": "hi"})
        await stack.stop()
        (span,) = stack.receiver.spans
        assert span.parent_span_id == ""
        assert span.trace_id != CLIENT_TRACE
        assert span.attributes[sc.OPENAI_API_TYPE] == "responses"
        assert span.name == "chat gpt-5-nano"
        (upstream,) = stack.upstream_headers
        version, trace_id, parent_id, flags = upstream["traceparent"].split("-")
        assert (version, trace_id, parent_id) == ("00", span.trace_id, span.span_id)
        assert int(flags, 16) & 1  # sampled (the SDK also sets the level-2 "random" bit)
        assert "tracestate" not in upstream

    async def test_tool_call_on_anthropic(self, stack: Stack) -> None:
        """An Anthropic tool call: provider anthropic, finish reason tool_use, no OpenAI attributes."""
        payload = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        }
        await stack.post(
            MESSAGES, payload, {"x-sim-scenario": "tool_call", "traceparent": traceparent()}
        )
        await stack.stop()
        (span,) = stack.receiver.spans
        assert span.name == "chat claude-sonnet-4-6"
        assert span.trace_id == CLIENT_TRACE
        assert span.attributes[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
        assert span.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
        assert sc.OPENAI_API_TYPE not in span.attributes
        assert span.attributes[sc.GEN_AI_RESPONSE_ID].startswith("msg_")
        assert span.status_code == STATUS_UNSET

    async def test_error_frame_sets_error_status_and_event(self, stack: Stack) -> None:
        """A mid-stream error frame: status ERROR, error.type is the provider's, one event."""
        await stack.post(
            MESSAGES,
            {"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": True, "messages": []},
            {"x-sim-scenario": "error", "x-sim-error-after": "2"},
        )
        await stack.post(CHAT, chat(), {"x-sim-scenario": "error", "x-request-id": "oa"})
        await stack.stop()
        anthropic_span = stack.receiver.one(**{sc.GEN_AI_PROVIDER_NAME: "anthropic"})
        assert anthropic_span.status_code == STATUS_ERROR
        assert anthropic_span.attributes[sc.ERROR_TYPE] == "overloaded_error"
        assert anthropic_span.attributes[sc.SW_OUTCOME] == "error_frame"
        ((_, _, event),) = anthropic_span.events_named(sc.EVENT_ERROR_FRAME)
        assert event[sc.ERROR_TYPE] == "overloaded_error"
        assert event[sc.ERROR_MESSAGE] == "Overloaded"
        openai_span = stack.receiver.one(**{sc.SW_REQUEST_ID: "oa"})
        assert openai_span.status_code == STATUS_ERROR
        assert openai_span.attributes[sc.ERROR_TYPE] == "server_error"

    async def test_stall_events_mark_its_start_and_end(self, stack: Stack) -> None:
        """A mid-stream stall: a started event once the threshold passed, an ended event later."""
        await stack.post(
            CHAT,
            chat(),
            {"x-sim-scenario": "stall", "x-sim-stall-ms": "500", "x-sim-stall-after": "2"},
        )
        await stack.stop()
        (span,) = stack.receiver.spans
        ((_, started_at, started),) = span.events_named(sc.EVENT_STALL_STARTED)
        ((_, ended_at, ended),) = span.events_named(sc.EVENT_STALL_ENDED)
        assert started[sc.SW_STALL_PHASE] == ended[sc.SW_STALL_PHASE] == "mid_stream"
        assert ended[sc.SW_STALL_DURATION] >= 0.45
        # Noticed while the stream was still silent: after the threshold, before the silence ended.
        assert STALL_THRESHOLD <= started[sc.SW_STALL_SILENCE] < ended[sc.SW_STALL_DURATION]
        assert started_at < ended_at
        assert span.attributes[sc.SW_STALLS] == 1
        assert span.attributes[sc.SW_MAX_GAP] >= 0.45
        assert span.status_code == STATUS_UNSET

    async def test_client_abort(self, stack: Stack) -> None:
        """A client that leaves mid-stream: status ERROR client_abort and a client_abort event, and
        the output it was delivered, estimated from its events (issue 11)."""
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                stack.proxy + CHAT,
                json=chat(),
                # 100 s of tokens: however late this (loaded) test closes, the stream is not over.
                headers={"x-sim-tokens": "2000", "x-sim-gap-ms": "50"},
            )
            await response.content.readany()
            response.close()
        await until(lambda: stack.running.proxy.inflight == 0, what="the aborted stream to end")
        await stack.stop()
        (span,) = stack.receiver.spans
        assert span.status_code == STATUS_ERROR
        assert span.attributes[sc.ERROR_TYPE] == "client_abort"
        ((_, at, _),) = span.events_named(sc.EVENT_CLIENT_ABORT)
        assert at == span.end_ns
        delivered = span.attributes[sc.SW_OUTPUT_EVENTS]  # however many arrived before it left
        assert span.attributes[sc.SW_OUTPUT_TOKENS] == delivered
        assert span.attributes[sc.SW_OUTPUT_TOKENS_ESTIMATED] is True
        assert sc.GEN_AI_USAGE_OUTPUT_TOKENS not in span.attributes

    async def test_upstream_reset_and_http_errors(self, stack: Stack) -> None:
        """Upstream resets and HTTP error answers are span errors typed by outcome or status."""
        await stack.post(CHAT, chat(), {"x-sim-scenario": "reset", "x-request-id": "reset"})
        await stack.post(CHAT, chat(), {"x-sim-status": "500", "x-request-id": "500"})
        await stack.post(CHAT, chat(), {"x-sim-status": "429", "x-request-id": "429"})
        await stack.stop()
        reset = stack.receiver.one(**{sc.SW_REQUEST_ID: "reset"})
        assert (reset.status_code, reset.attributes[sc.ERROR_TYPE]) == (
            STATUS_ERROR,
            "upstream_reset",
        )
        for code in ("500", "429"):
            span = stack.receiver.one(**{sc.SW_REQUEST_ID: code})
            assert (span.status_code, span.attributes[sc.ERROR_TYPE]) == (STATUS_ERROR, code)
            assert span.attributes[sc.HTTP_RESPONSE_STATUS_CODE] == int(code)

    async def test_upstream_connect_failure(self) -> None:
        """Upstream refuses the connection: error.type upstream_connect and no response status."""
        with refusing_port() as dead:
            async with otlp_receiver() as receiver:
                settings = settings_for(f"http://{LOOPBACK}:{dead}")
                running = await start(
                    settings,
                    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces"},
                )
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        f"http://{LOOPBACK}:{running.proxy_port}{CHAT}", json=chat()
                    ) as response,
                ):
                    assert response.status == 502
                await stop(running, drain_timeout=0.5)
                (span,) = receiver.spans
                assert span.status_code == STATUS_ERROR
                assert span.attributes[sc.ERROR_TYPE] == "upstream_connect"
                assert sc.HTTP_RESPONSE_STATUS_CODE not in span.attributes


CANARIES = {
    "authorization": "sk-CANARYauth0123456789",
    "x-api-key": "CANARYxapikey0123456789",
    "prompt": "CANARYprompt-the-secret-plan",
    "query": "CANARYquery0123",
}


def _encodings(secret: str) -> list[bytes]:
    return [
        secret.encode(),
        base64.b64encode(secret.encode()),
        urllib.parse.quote(secret).encode(),
        json.dumps(secret).encode(),
    ]


def _assert_absent(receiver: Receiver, secrets: list[str]) -> None:
    wire = b"".join(receiver.bodies)
    text = "\n".join(s for span in receiver.spans for s in span.strings())
    for secret in secrets:
        for form in _encodings(secret):
            assert form not in wire, f"{form!r} in the exported bytes"
        assert secret not in text


class TestNoSecrets:
    """Keys, prompts and query strings never reach a span; content only with capture on."""

    async def _traffic(self, stack: Stack) -> None:
        prompt = CANARIES["prompt"] * 10
        oa = openai.AsyncOpenAI(
            base_url=stack.proxy + "/v1", api_key=CANARIES["authorization"], max_retries=0
        )
        stream = await oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": prompt},
            ],
            stream=True,
            extra_query={"key": CANARIES["query"]},
        )
        async for _ in stream:
            pass
        await oa.close()
        an = anthropic.AsyncAnthropic(
            base_url=stack.proxy,
            api_key=CANARIES["x-api-key"],  # this SDK sends it as a Bearer token
            default_headers={"x-api-key": CANARIES["x-api-key"]},
            max_retries=0,
        )
        async with an.messages.stream(
            model="claude-sonnet-4-6",
            max_tokens=50,
            system="be brief",
            messages=[{"role": "user", "content": prompt}],
        ) as messages:
            async for _ in messages:
                pass
        await an.close()

    async def test_default_exports_no_secret_and_no_content(self, stack: Stack) -> None:
        """By default no canary (raw, base64, URL- or JSON-encoded) is in any exported byte."""
        await self._traffic(stack)
        await stack.stop()
        assert len(stack.receiver.spans) == 2
        _assert_absent(stack.receiver, list(CANARIES.values()))
        assert all(s.attributes[sc.URL_PATH].startswith("/v1/") for s in stack.receiver.spans)
        assert all("?" not in s.attributes[sc.URL_PATH] for s in stack.receiver.spans)
        for span in stack.receiver.spans:
            assert sc.GEN_AI_INPUT_MESSAGES not in span.attributes
            assert sc.GEN_AI_OUTPUT_MESSAGES not in span.attributes
        # Transparency: upstream did get the credentials.
        assert stack.upstream_headers[0]["authorization"] == "Bearer " + CANARIES["authorization"]
        assert stack.upstream_headers[1]["x-api-key"] == CANARIES["x-api-key"]

    async def test_capture_on_records_the_prompt_truncated(self) -> None:
        """With capture on the prompt and completion are recorded, cut to the limit; keys never."""
        limit = 40
        async with traced(capture_content=True, capture_limit=limit) as stack:
            await self._traffic(stack)
            await stack.stop()
        _assert_absent(
            stack.receiver, [CANARIES["authorization"], CANARIES["x-api-key"], CANARIES["query"]]
        )
        for span in stack.receiver.spans:
            messages = json.loads(span.attributes[sc.GEN_AI_INPUT_MESSAGES])
            texts = [p["content"] for m in messages for p in m["parts"]]
            system = span.attributes.get(sc.GEN_AI_SYSTEM_INSTRUCTIONS)
            if system is not None:
                texts += [p["content"] for p in json.loads(system)]
            assert sum(map(len, texts)) == limit
            assert any(t.startswith(CANARIES["prompt"][:10]) for t in texts)
            assert CANARIES["prompt"] * 2 not in span.attributes[sc.GEN_AI_INPUT_MESSAGES]
            (output,) = json.loads(span.attributes[sc.GEN_AI_OUTPUT_MESSAGES])
            assert output["role"] == "assistant"
            assert 0 < len(output["parts"][0]["content"]) <= limit


def _exemplar_traces(text: str) -> dict[str, set[str]]:
    """Trace ids of the exemplars on each histogram family, from an OpenMetrics scrape."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                out.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
    return out


class TestExemplars:
    """TTFT, TTFB and gap observations carry the trace id of a sampled, exported span."""

    async def test_openmetrics_scrape_links_histograms_to_exported_spans(
        self, stack: Stack
    ) -> None:
        """Exemplar trace ids on the three histograms are exactly the exported spans' trace ids."""
        for _ in range(3):
            await stack.post(CHAT, chat(), {"x-sim-gap-ms": "5"})
        # Not sampled (the client said so; parent-based sampling follows): no span, no exemplar.
        unsampled = "1" * 32
        await stack.post(CHAT, chat(), {"traceparent": traceparent(unsampled, flags="00")})
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://{LOOPBACK}:{stack.running.admin_port}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            ) as response,
        ):
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            text = await response.text()
        await stack.stop()
        exported = {s.trace_id for s in stack.receiver.spans}
        assert len(exported) == 3
        assert unsampled not in exported
        exemplars = _exemplar_traces(text)
        for family in (
            "streamwatch_time_to_first_token_seconds",
            "streamwatch_time_to_first_byte_seconds",
            "streamwatch_inter_chunk_gap_seconds",
        ):
            assert exemplars.get(family), f"no exemplar on {family}"
            assert exemplars[family] <= exported, family
        # The unsampled call was still propagated, with its flags, as the client's trace.
        assert stack.upstream_headers[-1]["traceparent"].startswith(f"00-{unsampled}-")
        assert stack.upstream_headers[-1]["traceparent"].endswith("-00")


class TestServeProcess:
    """``streamwatch serve`` turns tracing on from OTEL_* and flushes spans on SIGTERM."""

    async def test_env_configured_export_flushed_on_sigterm(self) -> None:
        """Endpoint, service name and resource attributes from the environment; spans out on stop."""
        async with otlp_receiver() as receiver, recording_simulator() as (upstream, seen):
            env = {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
                "OTEL_BSP_SCHEDULE_DELAY": "60000",  # only the shutdown flush can deliver
            }
            async with serve_process("--upstream", upstream, env=env) as serving:
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        serving.proxy_url + CHAT,
                        json=chat(),
                        headers={"traceparent": traceparent()},
                    ) as response,
                ):
                    await response.read()
                assert receiver.spans == []
                assert await serving.terminate() == 0
            (span,) = receiver.spans
            assert span.trace_id == CLIENT_TRACE
            assert span.resource["service.name"] == "streamwatch"
            assert span.resource["deployment.environment.name"] == "test"
            assert seen[0]["traceparent"] == traceparent(CLIENT_TRACE, span.span_id)
            (line,) = serving.events("stream.completed")
            assert line["trace_id"] == CLIENT_TRACE

    async def test_bad_otel_setting_stops_start_up(self) -> None:
        """An OTEL_* value streamwatch cannot honour exits 2 with the variable named."""
        proc = await run_cli(
            "serve", "--upstream", f"http://{LOOPBACK}:1", "--listen", f"{LOOPBACK}:0",
            "--admin-listen", f"{LOOPBACK}:0", env={"OTEL_TRACES_EXPORTER": "zipkin"},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 2
        assert b"OTEL_TRACES_EXPORTER" in err
