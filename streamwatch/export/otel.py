"""OpenTelemetry traces: one CLIENT span per proxied request, in the GenAI semantic conventions.

The span starts when the request's headers arrived (``Exchange.t_request_ns``), continues the
client's W3C trace context (``traceparent``/``tracestate``, with its baggage) or starts a new trace,
and its context replaces the client's in the upstream request, so the gateway's spans become its
children. Stream facts arrive as span events while the stream is open (first token, each stall as
it starts and ends, each error frame) and as attributes when it ends. :class:`TracingSink` is the
port's :class:`~streamwatch.sinks.Tracer`: it answers first, and the sampled trace id it returns is
given to the other sinks (metrics exemplars, the log line).

Nothing is read from headers except the trace context, no body, header value or query string is
copied into a span, and prompt and completion are recorded only with content capture on (the
opt-in ``gen_ai.input.messages`` / ``gen_ai.output.messages`` attributes, truncated).

The SDK is configured only by :func:`tracing_from_env`, called from the composition root; with
tracing off it returns no tracer at all, so the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import orjson
from multidict import CIMultiDict
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from streamwatch import __version__
from streamwatch.config import Settings
from streamwatch.core.events import (
    ErrorFrameReceived,
    FirstTokenReceived,
    StallEnded,
    StallStarted,
)
from streamwatch.core.prompt import Part, Prompt
from streamwatch.core.record import Outcome, StreamRecord
from streamwatch.export import semconv as sc
from streamwatch.sinks import Exchange, Hooks, SinkEvent, Trace

Closer = Callable[[], Awaitable[None]]

_MAX_ERROR_MESSAGE = 256  # error-frame messages on span events: enough to read, never a payload
_NS = 1e9


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value streamwatch cannot honour; the message names it."""


# -- content capture (opt-in) --------------------------------------------------------------------


def _part(part: Part) -> dict[str, str]:
    if part.content is None:
        return {"type": part.type}
    return {"type": part.type, "content": part.content}


def prompt_attributes(prompt: Prompt) -> dict[str, str]:
    """``gen_ai.input.messages`` (and ``gen_ai.system_instructions``) in the conventions' shape,
    from the prompt the core read (already within the capture limit)."""
    out: dict[str, str] = {}
    if prompt.system is not None:
        out[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = orjson.dumps(
            [_part(p) for p in prompt.system]
        ).decode()
    if prompt.messages is not None:
        rendered = [{"role": m.role, "parts": [_part(p) for p in m.parts]} for m in prompt.messages]
        out[sc.GEN_AI_INPUT_MESSAGES] = orjson.dumps(rendered).decode()
    return out


class _Budget:
    """Characters of content left for one attribute (``capture_limit`` in total)."""

    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, text: str) -> str:
        kept = text[: max(self.left, 0)]
        self.left -= len(kept)
        return kept


def completion_attribute(record: StreamRecord, limit: int) -> str | None:
    """``gen_ai.output.messages``: the captured text and tool calls, cut to ``limit`` characters."""
    if record.captured_text is None and not any(t.arguments for t in record.tool_calls):
        return None
    budget = _Budget(limit)
    parts: list[dict[str, Any]] = []
    if record.captured_text:
        parts.append({"type": "text", "content": budget.take(record.captured_text)})
    parts.extend(
        {
            "type": "tool_call",
            "id": call.call_id,
            "name": call.name,
            "arguments": budget.take(call.arguments or ""),
        }
        for call in record.tool_calls
    )
    finish = record.finish_reasons[0] if record.finish_reasons else record.outcome.value
    message = {"role": "assistant", "parts": parts, "finish_reason": finish}
    return orjson.dumps([message]).decode()


# -- the span ------------------------------------------------------------------------------------


def _set(attributes: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        attributes[key] = value


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / _NS


def _start_attributes(exchange: Exchange) -> dict[str, Any]:
    """What sampling may look at, known when the span starts (the conventions ask for these)."""
    attributes: dict[str, Any] = {
        sc.HTTP_REQUEST_METHOD: exchange.method,
        sc.URL_PATH: exchange.path,
        sc.SW_ROUTE: exchange.route,
        sc.SW_SIDE: exchange.side.value,
        sc.SW_REQUEST_ID: exchange.request_id,
    }
    if exchange.server_address:
        attributes[sc.SERVER_ADDRESS] = exchange.server_address
    _set(attributes, sc.SERVER_PORT, exchange.server_port)
    api = exchange.api
    if api is not None:
        attributes[sc.GEN_AI_OPERATION_NAME] = sc.OPERATION_BY_API.get(api, sc.OPERATION_CHAT)
        _set(attributes, sc.GEN_AI_PROVIDER_NAME, sc.PROVIDER_BY_API.get(api))
        _set(attributes, sc.OPENAI_API_TYPE, sc.OPENAI_API_TYPE_BY_API.get(api))
        _set(attributes, sc.GEN_AI_REQUEST_MODEL, exchange.request_model)
        _set(attributes, sc.GEN_AI_REQUEST_STREAM, exchange.stream_requested)
    return attributes


def span_name(exchange: Exchange) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` for LLM calls, the HTTP method otherwise."""
    if exchange.api is None:
        return exchange.method
    operation = sc.OPERATION_BY_API.get(exchange.api, sc.OPERATION_CHAT)
    if exchange.request_model:
        return f"{operation} {exchange.request_model}"
    return operation


def _record_attributes(record: StreamRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        sc.SW_API: record.api.value,
        sc.SW_OUTCOME: record.outcome.value,
        sc.SW_OUTPUT_EVENTS: record.output_events,
        sc.SW_OUTPUT_TOKENS: record.output_tokens,
        sc.SW_OUTPUT_TOKENS_ESTIMATED: record.output_tokens_estimated,
        sc.SW_STALLS: len(record.stalls),
        sc.SW_BODY_BYTES: record.body_bytes,
    }
    _set(attributes, sc.GEN_AI_RESPONSE_MODEL, record.response_model)
    _set(attributes, sc.GEN_AI_RESPONSE_ID, record.response_id)
    if record.finish_reasons:
        attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = record.finish_reasons
    elif record.outcome is not Outcome.COMPLETED:
        # Ended before its final event (truncated, reset, timeout, error frame, abort): the
        # conventions' "error"; error.type says which.
        attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [sc.FINISH_REASON_ERROR]
    _set(attributes, sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, _seconds(record.ttft_ns))
    usage = record.usage
    if usage is not None:
        _set(attributes, sc.GEN_AI_USAGE_INPUT_TOKENS, usage.input_tokens)
        _set(attributes, sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, usage.reasoning_tokens)
        _set(attributes, sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, usage.cached_input_tokens)
        _set(
            attributes,
            sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
            usage.cache_creation_input_tokens,
        )
    if not record.output_tokens_estimated:
        attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = record.output_tokens
    _set(attributes, sc.SW_TTFB, _seconds(record.ttfb_ns))
    _set(attributes, sc.SW_MAX_GAP, _seconds(record.max_gap_ns))
    _set(attributes, sc.SW_TOKENS_PER_SECOND, record.tokens_per_second)
    if record.analysis_failed:
        attributes[sc.SW_ANALYSIS_FAILED] = True
    for name, ns in record.upstream_timings:  # fixed names: a bounded attribute set
        attributes[sc.SW_UPSTREAM_TIMING_PREFIX + name] = ns / _NS
    return attributes


def error_type(
    record: StreamRecord | None, error_kind: str | None, status: int | None
) -> str | None:
    """Why the call failed, low-cardinality; None when it succeeded.

    The provider's type for an error frame; the outcome for any stream that did not complete
    (``client_abort``, ``upstream_reset``, ``truncated``...); ``upstream_<kind>`` when upstream failed
    before answering; ``cancelled`` when the request ended before any answer; else the status code
    for an HTTP error (4xx too: for a CLIENT span a refused call is a failed call).
    """
    if record is not None and record.error_frames:
        return record.error_frames[0].error_type or Outcome.ERROR_FRAME.value
    if record is not None and record.outcome is not Outcome.COMPLETED:
        return record.outcome.value
    if error_kind is not None:
        return f"upstream_{error_kind}"
    if status is None:
        return sc.ERROR_CANCELLED
    if status >= 400:
        return str(status)
    return None


#: The stream events that become span events (or, the first token, an attribute too).
_SPAN_EVENTS: Final = frozenset({FirstTokenReceived, StallStarted, StallEnded, ErrorFrameReceived})


class _SpanWatcher:
    """One request's span: started by ``trace``, events while the stream runs, ended in ``finish``."""

    __slots__ = (
        "_capture_limit",
        "_context",
        "_exchange",
        "_offset_ns",
        "_propagator",
        "_recording",
        "_span",
        "_ttft",
        "trace_id",
    )

    def __init__(
        self,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        exchange: Exchange,
        capture_limit: int | None,
    ) -> None:
        # Stream times are monotonic; spans want epoch ns. One offset maps every timestamp.
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._exchange = exchange
        self._propagator = propagator
        self._capture_limit = capture_limit
        self._ttft: float | None = None
        parent = propagator.extract(exchange.headers)
        attributes = _start_attributes(exchange)
        span = tracer.start_span(
            span_name(exchange),
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=exchange.t_request_ns + self._offset_ns,
        )
        self._span = span
        self._context: Context = trace.set_span_in_context(span, parent)  # keeps the baggage
        self._recording = span.is_recording()
        span_context = span.get_span_context()
        # Only sampled traces make exemplars and log ids: an unsampled id leads nowhere.
        self.trace_id = (
            trace.format_trace_id(span_context.trace_id)
            if span_context.trace_flags.sampled
            else None
        )

    def upstream_request(self, headers: CIMultiDict[str]) -> None:
        """Our span's context replaces the client's; the client's baggage passes as it was sent."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._context)
        headers.popall("tracestate", None)  # never forward a tracestate without its traceparent
        for key, value in carrier.items():
            if key == "baggage" and key in headers:
                continue
            headers[key] = value

    def events(self, events: Sequence[SinkEvent]) -> None:
        if not self._recording:
            return
        for event in events:
            if type(event) in _SPAN_EVENTS:  # not the per-chunk outputs, nor first byte, end...
                self._event(event)

    def _event(self, event: SinkEvent) -> None:
        span = self._span
        match event:
            case FirstTokenReceived(at_ns=at, ttft_ns=ttft):
                self._ttft = ttft / _NS  # an attribute at the end, with the record's others
                span.add_event(sc.EVENT_FIRST_TOKEN, {sc.SW_TTFT: self._ttft}, at + self._offset_ns)
            case StallStarted(at_ns=at, since_ns=since, phase=phase):
                span.add_event(
                    sc.EVENT_STALL_STARTED,
                    {sc.SW_STALL_PHASE: phase.value, sc.SW_STALL_SILENCE: (at - since) / _NS},
                    at + self._offset_ns,
                )
            case StallEnded(at_ns=at, since_ns=since, phase=phase):
                span.add_event(
                    sc.EVENT_STALL_ENDED,
                    {sc.SW_STALL_PHASE: phase.value, sc.SW_STALL_DURATION: (at - since) / _NS},
                    at + self._offset_ns,
                )
            case ErrorFrameReceived(at_ns=at, event_index=index, error_type=kind, message=text):
                span.add_event(
                    sc.EVENT_ERROR_FRAME,
                    {
                        sc.ERROR_TYPE: kind,
                        sc.ERROR_MESSAGE: text[:_MAX_ERROR_MESSAGE],
                        sc.SW_EVENT_INDEX: index,
                    },
                    at + self._offset_ns,
                )

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        span = self._span
        end_ns = time.time_ns() if record is None else record.t_end_ns + self._offset_ns
        try:
            if self._recording:
                self._describe(record, error_kind, end_ns)
        finally:
            span.end(end_ns)  # always: a watcher dropped for a fault must not leak its span

    def _describe(self, record: StreamRecord | None, error_kind: str | None, end_ns: int) -> None:
        """Every attribute learned after the start, set in one call (each ``set_attribute`` takes
        the span's lock and cleans its value on its own): first the request body's model and
        stream flag, which streamed through after the span started, then the outcome."""
        span = self._span
        exchange = self._exchange
        status = exchange.status
        attributes: dict[str, Any] = {}
        if exchange.api is not None:
            if exchange.request_model:
                span.update_name(span_name(exchange))
                attributes[sc.GEN_AI_REQUEST_MODEL] = exchange.request_model
            _set(attributes, sc.GEN_AI_REQUEST_STREAM, exchange.stream_requested)
        if error_kind is None:  # a failed upstream sent no status; ours (502/504) is not its
            _set(attributes, sc.HTTP_RESPONSE_STATUS_CODE, status)
        prompt = self._exchange.prompt
        if self._capture_limit is not None and prompt is not None:
            # Set at the end, with the outcome: the body may complete after the span started.
            attributes.update(prompt_attributes(prompt))
        if record is not None:
            attributes.update(_record_attributes(record))
            if record.ttft_ns is None:  # analysis stopped after the first token: keep its TTFT
                _set(attributes, sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, self._ttft)
            if record.outcome is Outcome.CLIENT_ABORT:
                span.add_event(sc.EVENT_CLIENT_ABORT, None, end_ns)
            if self._capture_limit is not None:
                _set(
                    attributes,
                    sc.GEN_AI_OUTPUT_MESSAGES,
                    completion_attribute(record, self._capture_limit),
                )
        failure = error_type(record, error_kind, status)
        if failure is not None:
            attributes[sc.ERROR_TYPE] = failure
            span.set_status(Status(StatusCode.ERROR, failure))
        span.set_attributes(attributes)


class TracingSink:
    """Gives every request a span on ``tracer``; content capture only if ``capture_limit`` is set."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        capture_limit: int | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = tracer
        self._capture_limit = capture_limit
        # The global propagator (W3C trace context + baggage unless OTEL_PROPAGATORS says else).
        self._propagator = propagator or propagate.get_global_textmap()

    def trace(self, exchange: Exchange) -> Trace:
        """Start the request's span (the status is set in ``finish``, also for upstream failures)."""
        span = _SpanWatcher(self._tracer, self._propagator, exchange, self._capture_limit)
        hooks = Hooks(
            upstream_request=span.upstream_request,
            events=span.events,
            finish=span.finish,
            outputs=False,
        )
        return Trace(hooks, span.trace_id)


# -- configuration from OTEL_* -------------------------------------------------------------------

_TRUE = ("true", "1", "yes", "on")


def otlp_exporter(environ: Mapping[str, str], signal: str, module: str, name: str) -> Any:
    """The OTLP exporter class ``name`` of one signal (``traces``, ``metrics``), configured as the
    ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_{PROTOCOL,ENDPOINT}`` variables say; ``module`` is the
    exporter module's last part (``trace_exporter``, ``metric_exporter``)."""
    upper = signal.upper()
    protocol = (
        environ.get(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    signal_endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
    base_endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "http/protobuf":
        http = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}")
        # The signal endpoint is used as given; the base endpoint gets the signal path (spec).
        endpoint = signal_endpoint or (
            base_endpoint.rstrip("/") + f"/v1/{signal}" if base_endpoint else None
        )
        return getattr(http, name)(endpoint=endpoint)
    if protocol == "grpc":
        try:  # optional: streamwatch does not depend on grpcio
            grpc = importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{module}")
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc "
                "package; install it or use http/protobuf"
            ) from None
        return getattr(grpc, name)(endpoint=signal_endpoint or base_endpoint)
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or grpc, got {protocol!r}"
    )


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    exporter: SpanExporter = otlp_exporter(environ, "traces", "trace_exporter", "OTLPSpanExporter")
    return exporter


def span_exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters ``OTEL_*`` asks for; none (tracing off) unless an OTLP endpoint is set or
    ``OTEL_TRACES_EXPORTER`` names one, and none when ``OTEL_SDK_DISABLED`` is true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    names = environ.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for raw in names.split(","):
        name = raw.strip().lower()
        if name == "otlp":
            exporters.append(_otlp_exporter(environ))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: expected otlp, console or none, got {raw.strip()!r}"
            )
    return exporters


def otel_resource() -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` over the defaults (``streamwatch``)."""
    detected = Resource.create()
    attributes: dict[str, Any] = {SERVICE_NAME: "streamwatch", SERVICE_VERSION: __version__}
    for key, value in detected.attributes.items():
        if key == SERVICE_NAME and str(value).startswith("unknown_service"):
            continue  # the SDK's placeholder, not a name anyone chose
        attributes[key] = value
    return Resource(attributes, detected.schema_url)


def tracing_from_env(
    environ: Mapping[str, str], settings: Settings
) -> tuple[TracingSink | None, list[Closer]]:
    """The tracer and its closers for the composition root: none when tracing is off.

    The exporter choice comes from ``environ``; the SDK itself reads the sampler
    (``OTEL_TRACES_SAMPLER``/``_ARG``), resource attributes and exporter options (headers,
    timeout, compression, certificates) from the process environment, as it does everywhere.
    Spans are batched; the closer flushes and shuts the provider down off the event loop.
    """
    exporters = span_exporters(environ)
    if not exporters:
        return None, []
    provider = TracerProvider(resource=otel_resource())
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("streamwatch", __version__)
    tracer_sink = TracingSink(
        tracer, capture_limit=settings.capture_limit if settings.capture_content else None
    )

    async def shutdown() -> None:
        await asyncio.to_thread(provider.shutdown)

    return tracer_sink, [shutdown]
