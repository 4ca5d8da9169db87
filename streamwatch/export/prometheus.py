"""Every Prometheus metric streamwatch exports, declared in one place (the DESIGN.md contract).

The metrics live on an injected :class:`~prometheus_client.CollectorRegistry`, never the global one.
The metric names are module constants so the dashboard and rule generator
(``dashboards/generate.py``) imports them instead of pasting them a second time.

What is counted when:

* **Live**, from the analyzer's events while the stream is open, so dashboards do not wait for a
  stream to end: TTFB (:class:`FirstByteReceived`), TTFT (:class:`FirstTokenReceived`), inter-chunk
  gaps and output events (:class:`OutputReceived`), error frames (:class:`ErrorFrameReceived`),
  stall episodes and the stalled gauge (:class:`StallStarted` / :class:`StallEnded`), malformed and
  oversize frames, the active-streams gauge (open / close).
* **At stream end**, from the final :class:`StreamRecord`: ``streams_total{outcome}``,
  ``finish_reasons_total``, ``tokens_total`` (reported usage only), tokens/s and stream duration.
  :meth:`StreamMetrics.close` never counts error frames, gaps or TTFT again.

The hot path is a :class:`StreamMetrics` handle, bound once per stream to its label children, so a
per-chunk observation is one ``observe``/``inc`` on a cached child with no label lookup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamwatch import __version__
from streamwatch.core.events import Api, StallPhase
from streamwatch.core.record import Outcome, StreamRecord

# --- metric names (exposition names; histograms add _bucket/_sum/_count) -------------------------

REQUESTS_TOTAL: Final = "streamwatch_requests_total"
STREAMS_TOTAL: Final = "streamwatch_streams_total"
STREAMS_ACTIVE: Final = "streamwatch_streams_active"
STREAMS_STALLED: Final = "streamwatch_streams_stalled"
STALLS_TOTAL: Final = "streamwatch_stalls_total"
TIME_TO_FIRST_BYTE_SECONDS: Final = "streamwatch_time_to_first_byte_seconds"
TIME_TO_FIRST_TOKEN_SECONDS: Final = "streamwatch_time_to_first_token_seconds"
INTER_CHUNK_GAP_SECONDS: Final = "streamwatch_inter_chunk_gap_seconds"
OUTPUT_TOKENS_PER_SECOND: Final = "streamwatch_output_tokens_per_second"
STREAM_DURATION_SECONDS: Final = "streamwatch_stream_duration_seconds"
FINISH_REASONS_TOTAL: Final = "streamwatch_finish_reasons_total"
ERROR_FRAMES_TOTAL: Final = "streamwatch_error_frames_total"
TOKENS_TOTAL: Final = "streamwatch_tokens_total"
OUTPUT_EVENTS_TOTAL: Final = "streamwatch_output_events_total"
UPSTREAM_ERRORS_TOTAL: Final = "streamwatch_upstream_errors_total"
ANALYSIS_ERRORS_TOTAL: Final = "streamwatch_analysis_errors_total"
BUILD_INFO: Final = "streamwatch_build_info"

#: Every exported metric name and its type, for the dashboard generator and its tests.
METRIC_TYPES: Final[Mapping[str, str]] = {
    REQUESTS_TOTAL: "counter",
    STREAMS_TOTAL: "counter",
    STREAMS_ACTIVE: "gauge",
    STREAMS_STALLED: "gauge",
    STALLS_TOTAL: "counter",
    TIME_TO_FIRST_BYTE_SECONDS: "histogram",
    TIME_TO_FIRST_TOKEN_SECONDS: "histogram",
    INTER_CHUNK_GAP_SECONDS: "histogram",
    OUTPUT_TOKENS_PER_SECOND: "histogram",
    STREAM_DURATION_SECONDS: "histogram",
    FINISH_REASONS_TOTAL: "counter",
    ERROR_FRAMES_TOTAL: "counter",
    TOKENS_TOTAL: "counter",
    OUTPUT_EVENTS_TOTAL: "counter",
    UPSTREAM_ERRORS_TOTAL: "counter",
    ANALYSIS_ERRORS_TOTAL: "counter",
    BUILD_INFO: "gauge",
}

# --- buckets ------------------------------------------------------------------------------------

#: TTFB/TTFT: 5 ms (a cached or local model answering at once) up to 10 min, because reasoning
#: models legitimately think for minutes before the first token (client defaults stop at 10 s).
#: An SLO objective for TTFT must be one of these bounds (the alert reads the ``le`` bucket).
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)  # fmt: skip
#: Inter-chunk gaps: 1 ms (tokens batched in one read) up to 120 s, with bounds at the default stall
#: threshold (10 s) and above it, so stalled gaps land in buckets of their own instead of +Inf.
GAP_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
#: Decode rate: 1 tok/s (an overloaded or CPU backend) to 5000 tok/s (speculative decoding, fast
#: inference hardware); the interesting band for hosted models is 20..300.
TOKENS_PER_SECOND_BUCKETS: Final = (
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
    2000.0, 5000.0,
)  # fmt: skip
#: Whole-stream duration: 100 ms (a short refusal) up to 1 h (long agentic or reasoning streams).
DURATION_BUCKETS: Final = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0,
)  # fmt: skip

# --- bounded label values -----------------------------------------------------------------------

OTHER: Final = "other"  # any value outside a bounded set, or past the model cap
UNKNOWN_MODEL: Final = "unknown"  # neither the response nor the request named a model
MAX_LABEL_LEN: Final = 64
DEFAULT_ROUTE: Final = "default"

FINISH_REASONS: Final = frozenset(
    {
        # OpenAI chat and legacy completions (chat_completion_chunk.py), Ollama done_reason
        "stop", "length", "tool_calls", "content_filter", "function_call",
        # Anthropic stop_reason, Bedrock stopReason
        "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
        "guardrail_intervened", "content_filtered", "malformed_model_output", "malformed_tool_use",
        "model_context_window_exceeded",
        # Responses terminal status, and gateways that write "error" as a finish reason
        "completed", "incomplete", "failed", "error", "max_output_tokens",
        # Gemini finishReason (lower-cased), Titan completionReason
        "safety", "recitation", "blocklist", "prohibited_content", "spii", "language",
        "malformed_function_call", "unexpected_tool_call", "too_many_tool_calls", "finish",
        # Cohere v2 finish_reason
        "complete", "tool_call", "timeout",
    }
)  # fmt: skip
#: Per API, the finish reasons and error types created at zero with a stream's first series, so the
#: first ``length`` cut or ``overloaded_error`` is visible to ``rate()`` (a counter that appears at
#: 1 is invisible to it). Other values still count; they just appear on first use.
_GEMINI_FINISH = ("stop", "max_tokens", "safety", "recitation")
_GEMINI_ERRORS = ("resource_exhausted", "internal", "unavailable", "cancelled", OTHER)
_BEDROCK_ERRORS = (
    "throttling_exception",
    "model_stream_error_exception",
    "service_unavailable_exception",
    "internal_server_exception",
    OTHER,
)
EXPECTED_FINISH_REASONS: Final[Mapping[str, tuple[str, ...]]] = {
    Api.OPENAI_CHAT.value: ("stop", "length", "tool_calls", "content_filter"),
    Api.OPENAI_RESPONSES.value: ("completed", "max_output_tokens", "content_filter", "failed"),
    Api.ANTHROPIC_MESSAGES.value: (
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "refusal",
    ),
    Api.OPENAI_COMPLETIONS.value: ("stop", "length"),
    Api.GEMINI.value: _GEMINI_FINISH,
    Api.GEMINI_JSON.value: _GEMINI_FINISH,
    Api.BEDROCK_CONVERSE.value: ("end_turn", "tool_use", "max_tokens", "guardrail_intervened"),
    Api.BEDROCK_INVOKE.value: ("end_turn", "tool_use", "max_tokens", "finish", "length"),
    Api.OLLAMA_CHAT.value: ("stop", "length"),
    Api.OLLAMA_GENERATE.value: ("stop", "length"),
    Api.COHERE_V2.value: ("complete", "max_tokens", "tool_call", "error"),
}
EXPECTED_ERROR_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    Api.OPENAI_CHAT.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.OPENAI_RESPONSES.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.ANTHROPIC_MESSAGES.value: ("overloaded_error", "api_error", "rate_limit_error", OTHER),
    Api.OPENAI_COMPLETIONS.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.GEMINI.value: _GEMINI_ERRORS,
    Api.GEMINI_JSON.value: _GEMINI_ERRORS,
    Api.BEDROCK_CONVERSE.value: _BEDROCK_ERRORS,
    Api.BEDROCK_INVOKE.value: (*_BEDROCK_ERRORS[:-1], "model_timeout_exception", OTHER),
    Api.OLLAMA_CHAT.value: ("error", OTHER),
    Api.OLLAMA_GENERATE.value: ("error", OTHER),
    Api.COHERE_V2.value: ("error", "timeout", OTHER),
}

#: Provider error types and codes named in corpus/ERROR_FRAMES.md; anything else is ``other``.
ERROR_TYPES: Final = frozenset(
    {
        # OpenAI error object types / Responses error codes
        "server_error", "rate_limit_exceeded", "invalid_prompt", "context_length_exceeded",
        "service_unavailable_error", "server_is_overloaded", "data_residency_mismatch",
        "bio_policy", "vector_store_timeout", "invalid_request_error",
        # llama.cpp
        "exceed_context_size_error",
        # Anthropic error.type
        "authentication_error", "permission_error", "not_found_error", "rate_limit_error",
        "timeout_error", "overloaded_error", "api_error", "billing_error",
        # Responses image error family, collapsed to one value by normalise_error_type
        "image_error",
        # Gemini (Google RPC status)
        "cancelled", "resource_exhausted", "internal", "unavailable", "deadline_exceeded",
        "invalid_argument", "permission_denied", "unauthenticated", "failed_precondition",
        # Bedrock stream exceptions (:exception-type, camelCase turned snake_case)
        "internal_server_exception", "model_stream_error_exception", "validation_exception",
        "throttling_exception", "service_unavailable_exception", "model_timeout_exception",
        # Ollama's bare error string; Cohere's message-end ERROR / TIMEOUT
        "error", "timeout",
    }
)  # fmt: skip

TOKEN_TYPES: Final = ("input", "output", "reasoning", "cached_input")
UPSTREAM_ERROR_KINDS: Final = ("connect", "timeout", "protocol")
ANALYSIS_STAGES: Final = ("analyzer", "malformed_frame", "oversize_event")
OUTCOMES: Final = tuple(o.value for o in Outcome)
STALL_PHASES: Final = tuple(p.value for p in StallPhase)

_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+\-]")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def sanitize_label(value: str) -> str:
    """Keep a label value printable and short: unusual characters become ``_``, at most 64 chars."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_LEN])


def normalise_finish_reason(value: str) -> str:
    """A finish reason from the known set (case-insensitive), else ``other``.

    Responses streams report ``incomplete:<reason>``: the reason itself is the useful label
    (``max_output_tokens``, ``content_filter``), else ``incomplete``.
    """
    lowered = value.strip().lower()
    status, _, reason = lowered.partition(":")
    if reason:
        return reason if reason in FINISH_REASONS else status if status in FINISH_REASONS else OTHER
    return lowered if lowered in FINISH_REASONS else OTHER


def normalise_error_type(value: str) -> str:
    """A provider error type from the bounded set, else ``other``; image errors become one value.

    camelCase (Bedrock's ``throttlingException``) becomes snake_case, like every other value.
    """
    lowered = _CAMEL.sub("_", value.strip()).lower()
    if lowered in ERROR_TYPES:
        return lowered
    if "image" in lowered and len(lowered) <= MAX_LABEL_LEN:
        return "image_error"
    return OTHER


class ModelLabels:
    """Maps model names to a bounded ``model`` label.

    With an allowlist, only listed models keep their (sanitised) name. Without one, the first
    ``max_models`` distinct sanitised values seen keep theirs. Everything else is ``other``; a
    missing model is ``unknown``. Memory is bounded: at most ``max_models`` names are remembered,
    and a small cache of raw inputs is cleared when it fills.
    """

    _CACHE_CAP: Final = 1024

    def __init__(self, allowlist: Collection[str] = (), max_models: int = 50) -> None:
        if max_models < 0:
            raise ValueError("max_models must be >= 0")
        self._fixed = bool(allowlist)
        self._admitted: set[str] = {sanitize_label(m) for m in allowlist}
        self._max = max_models
        self._cache: dict[str, str] = {}

    @property
    def known(self) -> frozenset[str]:
        """The model names that currently keep their own label value."""
        return frozenset(self._admitted)

    def __call__(self, model: str | None) -> str:
        """The label value for ``model``."""
        if not model:
            return UNKNOWN_MODEL
        label = self._cache.get(model)
        if label is not None:
            return label
        clean = sanitize_label(model)
        if clean in self._admitted:
            label = clean
        elif not self._fixed and len(self._admitted) < self._max:
            self._admitted.add(clean)
            label = clean
        else:
            label = OTHER
        if len(self._cache) >= self._CACHE_CAP:
            self._cache.clear()
        self._cache[model] = label
        return label


def _exemplar(trace_id: str | None) -> dict[str, str] | None:
    # OpenMetrics caps exemplar labels at 128 chars; a W3C trace id is 32 hex digits.
    if trace_id and len(trace_id) <= 64:
        return {"trace_id": trace_id}
    return None


def _ns_to_s(ns: int) -> float:
    return ns / 1e9


class Metrics:
    """Every streamwatch metric, registered on ``registry``; one instance per process.

    ``routes`` lists the configured upstream names so per-route counters start at zero.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model_allowlist: Collection[str] = (),
        max_models: int = 50,
        routes: Iterable[str] = (DEFAULT_ROUTE,),
        version: str = __version__,
    ) -> None:
        self.models = ModelLabels(model_allowlist, max_models)
        common = ("route", "api", "model")
        self.requests = Counter(
            REQUESTS_TOTAL,
            "Proxied requests, by the HTTP status code returned to the client.",
            [*common, "code"],
            registry=registry,
        )
        self.streams = Counter(
            STREAMS_TOTAL,
            "SSE streams that ended, one outcome per stream.",
            [*common, "outcome"],
            registry=registry,
        )
        self.streams_active = Gauge(
            STREAMS_ACTIVE,
            "SSE streams open right now.",
            ["route", "api"],
            registry=registry,
            multiprocess_mode="livesum",  # --workers: sum over live workers
        )
        self.streams_stalled = Gauge(
            STREAMS_STALLED,
            "Open SSE streams that are stalled right now.",
            ["route", "api"],
            registry=registry,
            multiprocess_mode="livesum",  # --workers: sum over live workers
        )
        self.stalls = Counter(
            STALLS_TOTAL,
            "Stall episodes, counted when the silence crosses the stall threshold.",
            [*common, "phase"],
            registry=registry,
        )
        self.ttfb = Histogram(
            TIME_TO_FIRST_BYTE_SECONDS,
            "Time from the request's headers to the first response body byte from upstream.",
            common,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            TIME_TO_FIRST_TOKEN_SECONDS,
            "Time from the request's headers to the first output event of the stream.",
            common,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.gap = Histogram(
            INTER_CHUNK_GAP_SECONDS,
            "Time between consecutive output events of a stream.",
            common,
            buckets=GAP_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            OUTPUT_TOKENS_PER_SECOND,
            "Decode rate of a stream: output tokens after the first per second of generation.",
            common,
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            STREAM_DURATION_SECONDS,
            "Time from the request's headers to the end of the stream.",
            common,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.finish_reasons = Counter(
            FINISH_REASONS_TOTAL,
            "Finish reasons reported by streams, unknown values counted as other.",
            [*common, "finish_reason"],
            registry=registry,
        )
        self.error_frames = Counter(
            ERROR_FRAMES_TOTAL,
            "Mid-stream error events, by provider error type (bounded set plus other).",
            [*common, "error_type"],
            registry=registry,
        )
        self.tokens = Counter(
            TOKENS_TOTAL,
            "Tokens the streams reported in their own usage, by token type.",
            [*common, "type"],
            registry=registry,
        )
        self.output_events = Counter(
            OUTPUT_EVENTS_TOTAL,
            "Output events (text, reasoning, refusal or tool-call deltas) seen in streams.",
            common,
            registry=registry,
        )
        self.upstream_errors = Counter(
            UPSTREAM_ERRORS_TOTAL,
            "Upstream requests that failed before a response, by failure kind.",
            ["route", "kind"],
            registry=registry,
        )
        self.analysis_errors = Counter(
            ANALYSIS_ERRORS_TOTAL,
            "Analyzer faults, oversize events and malformed frames; the bytes still flowed.",
            ["route", "api", "stage"],
            registry=registry,
        )
        self.build_info = Gauge(
            BUILD_INFO,
            "Always 1; the version label carries the streamwatch version.",
            ["version"],
            registry=registry,
            multiprocess_mode="max",  # --workers: 1, not one per worker
        )
        self.build_info.labels(version).set(1)
        self._bound: dict[tuple[str, str, str], _Children] = {}
        for route in routes:
            self.prepare_route(route)

    def prepare_route(self, route: str) -> None:
        """Pre-initialise a route's per-route series at zero so ``rate()`` sees them."""
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(route, kind)
        for api in Api:
            self.streams_active.labels(route, api.value)
            self.streams_stalled.labels(route, api.value)
            for stage in ANALYSIS_STAGES:
                self.analysis_errors.labels(route, api.value, stage)

    def children(self, route: str, api: str, model: str | None) -> _Children:
        """The cached label children for one (route, api, model); created on first use."""
        key = (route, str(api), self.models(model))
        found = self._bound.get(key)
        if found is None:
            found = self._bound[key] = _Children(self, *key)
        return found

    def open_stream(self, route: str, api: str, model: str | None) -> StreamMetrics:
        """A stream's response headers arrived: count it active and return its handle."""
        return StreamMetrics(self, route, str(api), model)

    # -- per-request and per-route counters (not tied to a stream) --

    def request_finished(self, route: str, api: str, model: str | None, code: int) -> None:
        """Count a proxied request by the status code returned to the client (any request).

        Not through :meth:`children`: a request that never streams must not create stream series.
        """
        self.requests.labels(route, str(api), self.models(model), str(code)).inc()

    def upstream_error(self, route: str, kind: str) -> None:
        """Count an upstream failure before a response: ``connect``, ``timeout`` or ``protocol``."""
        self.upstream_errors.labels(route, kind if kind in UPSTREAM_ERROR_KINDS else OTHER).inc()

    def analysis_error(self, route: str, api: str, stage: str) -> None:
        """Count an analyzer fault (``analyzer``) or a malformed/oversize frame."""
        self.analysis_errors.labels(route, str(api), stage).inc()


class _Children:
    """Label children of one (route, api, model), so hot-path observations skip ``labels()``."""

    __slots__ = (
        "analysis",
        "api",
        "duration",
        "error_frames",
        "finish",
        "gap",
        "metrics",
        "model",
        "outcomes",
        "output_events",
        "route",
        "stalls",
        "tokens",
        "tps",
        "ttfb",
        "ttft",
    )

    def __init__(self, metrics: Metrics, route: str, api: str, model: str) -> None:
        labels = (route, api, model)
        self.metrics = metrics
        self.route, self.api, self.model = labels
        self.ttfb = metrics.ttfb.labels(*labels)
        self.ttft = metrics.ttft.labels(*labels)
        self.gap = metrics.gap.labels(*labels)
        self.tps = metrics.tokens_per_second.labels(*labels)
        self.duration = metrics.duration.labels(*labels)
        self.output_events = metrics.output_events.labels(*labels)
        # Known values pre-initialised at zero: a combination's first stream makes all of them
        # visible, so rate(...{outcome="truncated"}) is 0, not absent.
        self.outcomes = {o: metrics.streams.labels(*labels, o) for o in OUTCOMES}
        self.stalls = {p: metrics.stalls.labels(*labels, p) for p in STALL_PHASES}
        self.tokens = {t: metrics.tokens.labels(*labels, t) for t in TOKEN_TYPES}
        self.finish: dict[str, Counter] = {
            r: metrics.finish_reasons.labels(*labels, r)
            for r in EXPECTED_FINISH_REASONS.get(api, ())
        }
        self.error_frames: dict[str, Counter] = {
            t: metrics.error_frames.labels(*labels, t) for t in EXPECTED_ERROR_TYPES.get(api, ())
        }

    def finish_reason(self, value: str) -> None:
        label = normalise_finish_reason(value)
        child = self.finish.get(label)
        if child is None:
            child = self.finish[label] = self.metrics.finish_reasons.labels(
                self.route, self.api, self.model, label
            )
        child.inc()

    def error_frame(self, error_type: str) -> None:
        label = normalise_error_type(error_type)
        child = self.error_frames.get(label)
        if child is None:
            child = self.error_frames[label] = self.metrics.error_frames.labels(
                self.route, self.api, self.model, label
            )
        child.inc()

    def record(self, record: StreamRecord, trace_id: str | None) -> None:
        self.outcomes[record.outcome.value].inc()
        for reason in record.finish_reasons:
            self.finish_reason(reason)
        usage = record.usage
        if usage is not None:
            for kind, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("reasoning", usage.reasoning_tokens),
                ("cached_input", usage.cached_input_tokens),
            ):
                if count:
                    self.tokens[kind].inc(count)
        exemplar = _exemplar(trace_id)
        tps = record.tokens_per_second
        if tps is not None and math.isfinite(tps) and tps >= 0:
            self.tps.observe(tps, exemplar)
        self.duration.observe(max(0.0, _ns_to_s(record.duration_ns)), exemplar)


class StreamMetrics:
    """One open stream's metrics handle: live observations plus the end-of-stream record.

    Created by :meth:`Metrics.open_stream` (active gauge +1); :meth:`close` must be called exactly
    once (active gauge -1, stalled gauge -1 if the stream ended stalled, end-of-stream metrics).
    """

    __slots__ = ("_c", "_closed", "_metrics", "_route_api", "_stalled", "trace_id")

    def __init__(self, metrics: Metrics, route: str, api: str, model: str | None) -> None:
        self._metrics = metrics
        self._c = metrics.children(route, api, model)
        self._route_api = (route, api)
        self._stalled = False
        self._closed = False
        self.trace_id: str | None = None  # set once tracing knows it; used as the exemplar
        metrics.streams_active.labels(route, api).inc()

    def set_model(self, model: str | None) -> None:
        """The response named its model: count the rest of the stream under that label."""
        route, api = self._route_api
        self._c = self._metrics.children(route, api, model)

    def on_first_byte(self, ttfb_s: float) -> None:
        """Live, on :class:`FirstByteReceived`: observe TTFB."""
        self._c.ttfb.observe(ttfb_s, _exemplar(self.trace_id))

    def on_first_token(self, ttft_s: float) -> None:
        """Live, on :class:`FirstTokenReceived`: observe TTFT."""
        self._c.ttft.observe(ttft_s, _exemplar(self.trace_id))

    def on_output(self, gap_s: float | None) -> None:
        """Live, on :class:`OutputReceived`: count the output event and observe its gap if any."""
        self._c.output_events.inc()
        if gap_s is not None:
            self._c.gap.observe(gap_s, _exemplar(self.trace_id))

    def on_error_frame(self, error_type: str) -> None:
        """Live, on :class:`ErrorFrameReceived`: count it by bounded error type."""
        self._c.error_frame(error_type)

    def on_stall_started(self, phase: StallPhase | str) -> None:
        """Live, on :class:`StallStarted`: count the episode and mark the stream stalled."""
        self._c.stalls[str(phase)].inc()
        if not self._stalled:
            self._stalled = True
            self._metrics.streams_stalled.labels(*self._route_api).inc()

    def on_stall_ended(self) -> None:
        """Live, on :class:`StallEnded`: the stream is no longer stalled."""
        if self._stalled:
            self._stalled = False
            self._metrics.streams_stalled.labels(*self._route_api).dec()

    def on_malformed_frame(self) -> None:
        """Live, on :class:`MalformedFrameReceived`."""
        self._metrics.analysis_error(self._c.route, self._c.api, "malformed_frame")

    def on_oversize_event(self) -> None:
        """Live, on :class:`OversizeEventDropped`."""
        self._metrics.analysis_error(self._c.route, self._c.api, "oversize_event")

    def on_analysis_failed(self) -> None:
        """Live: the analyzer raised and analysis of this stream stopped (bytes still flow)."""
        self._metrics.analysis_error(self._c.route, self._c.api, "analyzer")

    def close(self, record: StreamRecord | None) -> None:
        """At stream end: release the gauges and record outcome, reasons, tokens, rate, duration.

        ``record`` None releases the gauges only. A second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self.on_stall_ended()
        self._metrics.streams_active.labels(*self._route_api).dec()
        if record is not None:
            if record.model and self._metrics.models(record.model) != self._c.model:
                self.set_model(record.model)
            self._c.record(record, self.trace_id)
