"""The tracing sink's pieces: OTEL_* exporter choice, content capture, error typing, span lifecycle.

End-to-end behaviour (real proxy, OTLP receiver, exemplars) is in ``tests/e2e/test_tracing.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import time
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamwatch.config import ConfigError, load_settings
from streamwatch.core.api import Api
from streamwatch.core.events import FirstTokenReceived, OutputReceived
from streamwatch.core.record import CloseCause, Outcome, StreamRecord, Usage, unanalyzed_record
from streamwatch.core.request import read_request
from streamwatch.export import semconv as sc
from streamwatch.export.otel import (
    TracingConfigError,
    TracingSink,
    error_type,
    prompt_attributes,
    span_exporters,
    tracing_from_env,
)
from streamwatch.sinks import Exchange, Hooks
from tests.harness import settings_for

ENDPOINT = "http://127.0.0.1:4318"


def _endpoint(exporter: Any) -> str:
    assert isinstance(exporter, OTLPSpanExporter)
    return str(exporter._endpoint)


class TestSpanExporters:
    """Tracing is on only when OTEL_* asks for it, with the exporter it names."""

    def _exporters(self, environ: dict[str, str]) -> list[Any]:
        exporters = span_exporters(environ)
        for exporter in exporters:
            exporter.shutdown()
        return exporters

    def test_off_without_endpoint_or_exporter(self) -> None:
        """No OTEL_* at all: no exporter, so no tracer and no hot-path cost."""
        assert span_exporters({}) == []

    def test_base_endpoint_gets_the_signal_path(self) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT alone turns on OTLP/HTTP protobuf at <base>/v1/traces."""
        (exporter,) = self._exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT + "/"})
        assert _endpoint(exporter) == ENDPOINT + "/v1/traces"

    def test_traces_endpoint_is_used_as_given(self) -> None:
        """The signal-specific endpoint wins and is not extended."""
        (exporter,) = self._exporters(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/custom",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
        )
        assert _endpoint(exporter) == ENDPOINT + "/custom"

    @pytest.mark.parametrize(
        "environ",
        [
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"},
        ],
    )
    def test_disabled_or_none_wins_over_an_endpoint(self, environ: dict[str, str]) -> None:
        """OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none: off even with an endpoint."""
        assert span_exporters(environ) == []

    def test_exporter_list(self) -> None:
        """OTEL_TRACES_EXPORTER=otlp,console gives both; otlp without endpoint uses the default."""
        otlp, console = self._exporters({"OTEL_TRACES_EXPORTER": "otlp, console"})
        assert _endpoint(otlp) == "http://localhost:4318/v1/traces"
        assert isinstance(console, ConsoleSpanExporter)

    @pytest.mark.skipif(
        importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None,
        reason="the gRPC exporter is installed here",
    )
    def test_grpc_without_its_package_is_a_named_error(self) -> None:
        """grpc is optional: asking for it without the package names the package to install."""
        with pytest.raises(TracingConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
            span_exporters(
                {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
            )

    @pytest.mark.parametrize(
        ("environ", "variable"),
        [
            ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
            (
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                },
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
        ],
    )
    def test_unsupported_values_name_the_variable(
        self, environ: dict[str, str], variable: str
    ) -> None:
        """A value streamwatch cannot honour stops start-up with the variable's name."""
        with pytest.raises(TracingConfigError, match=variable):
            span_exporters(environ)

    async def test_tracing_from_env_off_installs_nothing(self) -> None:
        """Tracing off: no tracer, no closer."""
        assert tracing_from_env({}, settings_for("http://127.0.0.1:1")) == (None, [])

    async def test_tracing_from_env_on_gives_tracer_and_closer(self) -> None:
        """Tracing on: a TracingSink and a closer that shuts the provider down."""
        tracer, closers = tracing_from_env(
            {"OTEL_TRACES_EXPORTER": "console"}, settings_for("http://127.0.0.1:1")
        )
        assert isinstance(tracer, TracingSink)
        (close,) = closers
        await close()


class TestCaptureSwitch:
    """The GenAI conventions' OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT turns capture on."""

    def _capture(self, environ: dict[str, str]) -> bool:
        return load_settings(
            argparse.Namespace(upstream="http://127.0.0.1:1"), environ
        ).capture_content

    def test_genai_variable_enables_capture(self) -> None:
        """true or span_only enable capture; off by default."""
        assert self._capture({}) is False
        assert self._capture({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"})
        assert self._capture({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY"})

    def test_streamwatch_setting_wins(self) -> None:
        """STREAMWATCH_CAPTURE_CONTENT=false overrides the GenAI variable."""
        environ = {
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "STREAMWATCH_CAPTURE_CONTENT": "false",
        }
        assert self._capture(environ) is False

    def test_bad_value_is_a_config_error(self) -> None:
        """An unknown value names the variable."""
        with pytest.raises(ConfigError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
            self._capture({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe"})


def _texts(attribute: str) -> list[str]:
    messages = json.loads(attribute)
    return [p.get("content", "") for m in messages for p in m["parts"]]


def _captured(body: bytes, limit: int) -> dict[str, str]:
    """The prompt attributes of a request body: read by the core, rendered by the tracing sink."""
    prompt = read_request(body, capture_limit=limit).prompt
    return {} if prompt is None else prompt_attributes(prompt)


class TestPromptCapture:
    """Request messages become gen_ai.input.messages in the conventions' shape, within the limit."""

    def test_openai_chat_messages(self) -> None:
        """Roles kept, string and text-part content kept, other parts named by type only."""
        body = {
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is"},
                        {"type": "image_url", "image_url": {"url": "data:secret"}},
                    ],
                },
            ]
        }
        attrs = _captured(json.dumps(body).encode(), 100)
        assert json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES]) == [
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {
                "role": "user",
                "parts": [{"type": "text", "content": "what is"}, {"type": "image_url"}],
            },
        ]
        assert "data:secret" not in attrs[sc.GEN_AI_INPUT_MESSAGES]

    def test_anthropic_system_and_responses_input(self) -> None:
        """Anthropic ``system`` and Responses ``instructions`` are system instructions."""
        anthropic = _captured(
            json.dumps({"system": "sys", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            100,
        )
        assert _texts(anthropic[sc.GEN_AI_INPUT_MESSAGES]) == ["hi"]
        assert json.loads(anthropic[sc.GEN_AI_SYSTEM_INSTRUCTIONS]) == [
            {"type": "text", "content": "sys"}
        ]
        responses = _captured(
            json.dumps({"instructions": "sys", "input": "question"}).encode(), 100
        )
        assert json.loads(responses[sc.GEN_AI_INPUT_MESSAGES]) == [
            {"role": "user", "parts": [{"type": "text", "content": "question"}]}
        ]

    def test_all_content_is_cut_to_the_limit_and_stays_json(self) -> None:
        """The limit counts every content character together; the attribute is valid JSON."""
        body = {"system": "S" * 30, "messages": [{"role": "user", "content": "U" * 30}] * 3}
        attrs = _captured(json.dumps(body).encode(), 50)
        texts = _texts(attrs[sc.GEN_AI_INPUT_MESSAGES])
        assert texts == ["U" * 20, "", ""]
        assert json.loads(attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS])[0]["content"] == "S" * 30

    @pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"model": "m"}'])
    def test_unreadable_or_messageless_bodies_give_nothing(self, body: bytes) -> None:
        """Bodies without messages produce no content attribute."""
        assert _captured(body, 100) == {}


class TestErrorType:
    """error.type is low-cardinality: provider type, outcome, upstream kind or status code."""

    @pytest.mark.parametrize(
        ("error_kind", "status", "expected"),
        [
            (None, 200, None),
            (None, 302, None),
            (None, 429, "429"),
            (None, 503, "503"),
            ("connect", 502, "upstream_connect"),
            ("timeout", 504, "upstream_timeout"),
            (None, None, "cancelled"),
        ],
    )
    def test_without_a_stream_record(
        self, error_kind: str | None, status: int | None, expected: str | None
    ) -> None:
        """Requests that were not analyzed are typed from the upstream failure or HTTP status."""
        assert error_type(None, error_kind, status) == expected


def _exchange(**overrides: Any) -> Exchange:
    values: dict[str, Any] = {
        "request_id": "r1",
        "route": "default",
        "method": "POST",
        "path": "/v1/chat/completions",
        "api": Api.OPENAI_CHAT,
        "request_model": "gpt-4o-mini",
        "stream_requested": True,
        "t_request_ns": 0,
        "headers": CIMultiDictProxy(CIMultiDict()),
        **overrides,
    }
    return Exchange(**values)


def _finish_hook(hooks: Hooks) -> Any:
    assert hooks.finish is not None
    return hooks.finish


@pytest.fixture
def memory() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class TestSpanLifecycle:
    """The watcher starts the span at request time and always ends it, even when describing fails."""

    def test_span_starts_at_request_time_in_epoch_ns(
        self, memory: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        """A request that arrived 2 s ago (monotonic) gets a span starting 2 s ago (wall clock)."""
        provider, exporter = memory
        t_request = time.monotonic_ns() - 2_000_000_000
        before = time.time_ns()
        exchange = _exchange(t_request_ns=t_request)
        traced = TracingSink(provider.get_tracer("t")).trace(exchange)
        hooks = traced.hooks
        assert hooks.events is not None
        assert hooks.finish is not None
        hooks.events((OutputReceived(t_request, None),))
        exchange.status = 200
        hooks.finish(None, None)
        (span,) = exporter.get_finished_spans()
        assert span.kind is SpanKind.CLIENT
        assert span.start_time is not None
        assert abs(span.start_time - (before - 2_000_000_000)) < 50_000_000
        assert traced.trace_id == format(span.context.trace_id, "032x")

    def test_non_llm_paths_get_an_http_span_without_genai_attributes(
        self, memory: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        """``GET /v1/models`` is named by its method and carries no gen_ai.* attribute."""
        provider, exporter = memory
        exchange = _exchange(method="GET", path="/v1/models", api=None, request_model=None)
        finish = _finish_hook(TracingSink(provider.get_tracer("t")).trace(exchange).hooks)
        exchange.status = 200
        finish(None, None)
        (span,) = exporter.get_finished_spans()
        assert span.name == "GET"
        assert span.attributes is not None
        assert not [k for k in span.attributes if k.startswith("gen_ai.")]
        assert span.status.status_code is StatusCode.UNSET

    def test_request_facts_learned_after_the_start_name_the_span(
        self, memory: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        """The body's model and stream flag, read after the span started, are on the ended span."""
        provider, exporter = memory
        exchange = _exchange(request_model=None, stream_requested=None)
        finish = _finish_hook(TracingSink(provider.get_tracer("t")).trace(exchange).hooks)
        exchange.request_model, exchange.stream_requested, exchange.status = "gpt-4o", False, 200
        finish(None, None)
        (span,) = exporter.get_finished_spans()
        assert span.name == "chat gpt-4o"
        assert span.attributes is not None
        assert span.attributes[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o"
        assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is False

    def test_first_token_time_survives_a_stopped_analysis(
        self, memory: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        """TTFT seen before the analysis stopped stays on the span (its record has none)."""
        provider, exporter = memory
        exchange = _exchange()
        hooks = TracingSink(provider.get_tracer("t")).trace(exchange).hooks
        assert hooks.events is not None
        hooks.events((FirstTokenReceived(250_000_000, 250_000_000, "gpt-4o-mini"),))
        exchange.status = 200
        _finish_hook(hooks)(_stream_record(analysis_failed=True), None)
        (span,) = exporter.get_finished_spans()
        assert span.attributes is not None
        assert span.attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.25
        assert span.attributes[sc.SW_ANALYSIS_FAILED] is True
        assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
            (sc.EVENT_FIRST_TOKEN, {sc.SW_TTFT: 0.25})
        ]

    def test_span_ends_even_if_describing_it_fails(
        self, memory: tuple[TracerProvider, InMemorySpanExporter]
    ) -> None:
        """A fault while setting final attributes still ends (and exports) the span."""
        provider, exporter = memory
        exchange = _exchange()
        finish = _finish_hook(TracingSink(provider.get_tracer("t")).trace(exchange).hooks)
        exchange.status = "not a status"  # type: ignore[assignment]  # provokes the fault
        with pytest.raises(TypeError):
            finish(None, None)
        assert len(exporter.get_finished_spans()) == 1


def _ended_span(record: StreamRecord) -> Any:
    """The span of one chat stream that ended with ``record``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exchange = _exchange()
    hooks = TracingSink(provider.get_tracer("t")).trace(exchange).hooks
    exchange.status = 200
    _finish_hook(hooks)(record, None)
    (span,) = exporter.get_finished_spans()
    return span


def _stream_record(**changes: Any) -> StreamRecord:
    base = unanalyzed_record(
        api=Api.OPENAI_CHAT,
        request_model="gpt-4o-mini",
        t_request_ns=0,
        t_end_ns=1_000_000_000,
        cause=CloseCause.UPSTREAM_EOF,
        body_bytes=10,
    )
    return dataclasses.replace(base, **{"analysis_failed": False, **changes})


class TestCurrentConventions:
    """Spans follow the GenAI conventions the OTLP metrics cite (semantic-conventions-genai ac48b1f)."""

    def test_cache_writes_are_cache_write_tokens(self) -> None:
        """Anthropic's cache creation tokens are gen_ai.usage.cache_write.input_tokens."""
        span = _ended_span(
            _stream_record(
                outcome=Outcome.COMPLETED,
                finish_reasons=("stop",),
                usage=Usage(input_tokens=5, cache_creation_input_tokens=7),
            )
        )
        assert span.attributes["gen_ai.usage.cache_write.input_tokens"] == 7
        assert "gen_ai.usage.cache_creation.input_tokens" not in span.attributes

    @pytest.mark.parametrize(
        ("outcome", "expected_type"),
        [
            (Outcome.TRUNCATED, "truncated"),
            (Outcome.UPSTREAM_RESET, "upstream_reset"),
            (Outcome.UPSTREAM_TIMEOUT, "upstream_timeout"),
        ],
    )
    def test_a_stream_cut_before_its_final_event_finishes_with_error(
        self, outcome: Outcome, expected_type: str
    ) -> None:
        """No finish reason and no final event: finish_reasons is ["error"], error.type says why."""
        span = _ended_span(_stream_record(outcome=outcome, finish_reasons=()))
        assert span.attributes["gen_ai.response.finish_reasons"] == ("error",)
        assert span.attributes["error.type"] == expected_type

    def test_a_completed_stream_keeps_its_reasons(self) -> None:
        """A completed stream reports the provider's finish reasons as written."""
        span = _ended_span(_stream_record(outcome=Outcome.COMPLETED, finish_reasons=("stop",)))
        assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert "error.type" not in span.attributes


class TestUpstreamTimingAttributes:
    """Durations the upstream announced or reported are span attributes, in seconds, by name."""

    def test_each_timing_is_an_attribute(self) -> None:
        """``streamwatch.upstream_timing.<name>`` per timing of the record."""
        timings = (("litellm_overhead", 3_500_000), ("bedrock_latency", 1_200_000_000))
        record = _stream_record(outcome=Outcome.COMPLETED, upstream_timings=timings)
        span = _ended_span(record)
        assert span.attributes["streamwatch.upstream_timing.litellm_overhead"] == 0.0035
        assert span.attributes["streamwatch.upstream_timing.bedrock_latency"] == 1.2
