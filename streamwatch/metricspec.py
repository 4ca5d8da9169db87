"""Every metric streamwatch exports, described once: name, type, help, unit, labels, buckets.

This table is the single source the rest is generated from: the prometheus-client objects
(:mod:`streamwatch.export.prometheus`), the README's metric table (:func:`markdown_table`, drift
checked by ``dashboards/generate.py --check``), the names and label values the dashboards and rules
use (:mod:`streamwatch.mixin`) and the OTLP instruments. It imports nothing but the core's enums, so
tools can read it without prometheus-client or OpenTelemetry installed.

What is counted when: **live**, from the analyzer's events while the stream is open (TTFB, TTFT,
gaps, output events, error frames, stalls and the stalled gauge, malformed and oversize frames, the
active gauge), so dashboards do not wait for a stream to end; **at stream end**, from the final
record (outcome, finish reasons, reported usage, delivered output tokens, tokens/s, duration),
never counting a live fact twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from streamwatch.core.announced import HEADER_TIMINGS
from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import UPSTREAM_TIMINGS, Outcome
from streamwatch.core.side import Side
from streamwatch.core.slo import MISS_REASONS

Kind = Literal["counter", "gauge", "histogram"]
#: How a gauge adds up over ``--workers`` processes (prometheus-client's multiprocess modes).
MultiprocessMode = Literal["all", "livesum", "max"]

# --- label names ----------------------------------------------------------------------------------

ROUTE: Final = "route"  # the configured upstream's name
SIDE: Final = "side"  # which side of the gateway the route watches (core Side); fixed per route
API: Final = "api"  # the protocol interpreter (Api), or ``other`` on requests to non-LLM paths
MODEL: Final = "model"  # bounded: allowlist or the first --max-models names, else ``other``
CODE: Final = "code"
OUTCOME: Final = "outcome"
PHASE: Final = "phase"
FINISH_REASON: Final = "finish_reason"
ERROR_TYPE: Final = "error_type"
TOKEN_TYPE: Final = "type"
KIND: Final = "kind"
STAGE: Final = "stage"
SOURCE: Final = "source"  # only on `streamwatch probe`'s series: source="probe" (canary traffic)
USAGE: Final = "usage"  # where delivered output tokens came from: the stream's report or its events
VERSION: Final = "version"
UPSTREAM: Final = "upstream"  # a route's configured upstream origin (scheme://host:port)
REASON: Final = "reason"  # why: the goodput objective a stream missed, or a refused connection
RESULT: Final = "result"  # how a probe or a capture ended
TIMING: Final = "timing"  # an upstream-reported duration's fixed name (TIMINGS below)

#: ``side`` follows from ``route`` (configuration), so it adds no series; it keeps a client-side
#: and a provider-side sidecar of one gateway apart when their routes share a name.
STREAM_LABELS: Final = (ROUTE, SIDE, API, MODEL)
#: Families people do not slice by model carry only these (the series budget in the README).
ROUTE_API: Final = (ROUTE, SIDE, API)

# --- bounded label values -------------------------------------------------------------------------

OTHER: Final = "other"  # any value outside a bounded set, or past the model cap
UNKNOWN_MODEL: Final = "unknown"  # neither the response nor the request named a model
NON_LLM_API: Final = "other"  # api label of requests to paths that are not an LLM API
DEFAULT_ROUTE: Final = "default"

OUTCOMES: Final = tuple(o.value for o in Outcome)
#: Durations upstreams report in their frames (core UPSTREAM_TIMINGS) or announce in their
#: response headers (core HEADER_TIMINGS): the ``timing`` label's values.
TIMINGS: Final = (*UPSTREAM_TIMINGS, *HEADER_TIMINGS.values())
SIDES: Final = tuple(s.value for s in Side)
STALL_PHASES: Final = tuple(p.value for p in StallPhase)
APIS: Final = tuple(a.value for a in Api)
TOKEN_TYPES: Final = ("input", "output", "reasoning", "cached_input")
#: Where a stream's delivered output token count came from: its own usage report, or its events.
USAGE_REPORTED: Final = "reported"
USAGE_ESTIMATED: Final = "estimated"
USAGE_VALUES: Final = (USAGE_REPORTED, USAGE_ESTIMATED)
PROBE_SOURCE: Final = "probe"
UPSTREAM_ERROR_KINDS: Final = ("connect", "tls", "timeout", "protocol")
REFUSED_MAX_CONNECTIONS: Final = "max_connections"
REFUSED_NO_DESCRIPTORS: Final = "out_of_file_descriptors"
CONNECTION_REFUSAL_REASONS: Final = (REFUSED_MAX_CONNECTIONS, REFUSED_NO_DESCRIPTORS)
#: Why a probe failed, one bounded value per failed probe, in the order it is decided: before any
#: response, the proxy's upstream error kinds (``connect``, ``tls``, ``timeout``, ``protocol``),
#: as blackbox_exporter reports ``probe_success 0`` with the phase that failed; then a response
#: that was not a 200, a 200 that was not an event stream, a stream whose outcome was not
#: ``completed`` (the outcome; ``protocol`` if a transport error left none), and a completed stream
#: without output.
PROBE_HTTP_STATUS: Final = "http_status"
PROBE_NOT_A_STREAM: Final = "not_a_stream"
PROBE_NO_OUTPUT: Final = "no_output"
PROBE_FAILURE_REASONS: Final = (
    *UPSTREAM_ERROR_KINDS,
    PROBE_HTTP_STATUS,
    PROBE_NOT_A_STREAM,
    *(o.value for o in Outcome if o is not Outcome.COMPLETED),
    PROBE_NO_OUTPUT,
)
STAGE_ANALYZER: Final = "analyzer"
STAGE_MALFORMED: Final = "malformed_frame"
STAGE_OVERSIZE: Final = "oversize_event"
ANALYSIS_STAGES: Final = (STAGE_ANALYZER, STAGE_MALFORMED, STAGE_OVERSIZE)

#: Per API, the finish reasons that keep their own label value; anything else is ``other``. A
#: vocabulary per API, not one shared set, bounds the series per (route, api, model): an Anthropic
#: stream cannot fan out into OpenAI's reasons. ``error`` is there because gateways (LiteLLM)
#: write it as a finish reason when the provider failed mid-stream.
_GEMINI_FINISH: Final = frozenset(
    {
        "stop", "max_tokens", "safety", "recitation", "language", "blocklist",
        "prohibited_content", "spii", "malformed_function_call", "unexpected_tool_call",
        "too_many_tool_calls", "image_safety", "finish_reason_unspecified",
    }
)  # fmt: skip
_BEDROCK_FINISH: Final = frozenset(
    {
        "end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened",
        "content_filtered", "malformed_model_output", "malformed_tool_use",
        "model_context_window_exceeded",
    }
)  # fmt: skip
FINISH_REASONS_BY_API: Final[Mapping[str, frozenset[str]]] = {
    # openai chat_completion_chunk.py (function_call is the legacy tool reason)
    Api.OPENAI_CHAT.value: frozenset(
        {"stop", "length", "tool_calls", "content_filter", "function_call", "error"}
    ),
    # Responses terminal status, and the reason of an incomplete one
    Api.OPENAI_RESPONSES.value: frozenset(
        {"completed", "incomplete", "max_output_tokens", "content_filter", "failed", "error"}
    ),
    # Anthropic stop_reason
    Api.ANTHROPIC_MESSAGES.value: frozenset(
        {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "error"}
    ),
    # legacy completions, Ollama done_reason (load/unload: requests that only (un)load a model)
    Api.OPENAI_COMPLETIONS.value: frozenset({"stop", "length", "content_filter", "error"}),
    Api.OLLAMA_CHAT.value: frozenset({"stop", "length", "load", "unload"}),
    Api.OLLAMA_GENERATE.value: frozenset({"stop", "length", "load", "unload"}),
    # Gemini finishReason (genai-py types.FinishReason), lower-cased; Vertex int enums are other
    Api.GEMINI.value: _GEMINI_FINISH,
    Api.GEMINI_JSON.value: _GEMINI_FINISH,
    # Bedrock Converse stopReason (botocore service-2.json StopReason)
    Api.BEDROCK_CONVERSE.value: _BEDROCK_FINISH,
    # Invoke bodies: Anthropic stop_reason, Nova stopReason, Titan completionReason
    Api.BEDROCK_INVOKE.value: _BEDROCK_FINISH
    | frozenset({"pause_turn", "refusal", "finish", "length", "content_filtered"}),
    # Cohere v2 finish_reason (cohere-py chat_finish_reason.py)
    Api.COHERE_V2.value: frozenset(
        {"complete", "stop_sequence", "max_tokens", "tool_call", "error", "timeout"}
    ),
    Api.SSE.value: frozenset(),  # not interpreted: no finish reasons
}
FINISH_REASONS: Final = frozenset().union(*FINISH_REASONS_BY_API.values())

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
        # Gemini (Google RPC status of the error object)
        "cancelled", "resource_exhausted", "internal", "unavailable", "deadline_exceeded",
        "invalid_argument", "permission_denied", "unauthenticated", "failed_precondition",
        # Bedrock stream exceptions (:exception-type, camelCase made snake_case)
        "internal_server_exception", "model_stream_error_exception", "validation_exception",
        "throttling_exception", "service_unavailable_exception", "model_timeout_exception",
        # Ollama's bare error string (no type of its own); Cohere's message-end ERROR / TIMEOUT
        "error", "timeout",
    }
)  # fmt: skip

#: Per API, the finish reasons and error types created at zero with a stream's first series, so the
#: first ``length`` cut or ``overloaded_error`` is visible to ``rate()`` (a counter that appears at
#: 1 is invisible to it). Other values still count; they just appear on first use.
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
    Api.GEMINI.value: ("stop", "max_tokens", "safety"),
    Api.GEMINI_JSON.value: ("stop", "max_tokens", "safety"),
    Api.BEDROCK_CONVERSE.value: ("end_turn", "tool_use", "max_tokens", "guardrail_intervened"),
    Api.BEDROCK_INVOKE.value: ("end_turn", "tool_use", "max_tokens"),
    Api.OLLAMA_CHAT.value: ("stop", "length"),
    Api.OLLAMA_GENERATE.value: ("stop", "length"),
    Api.COHERE_V2.value: ("complete", "max_tokens", "tool_call", "error"),
}
_BEDROCK_ERRORS = ("throttling_exception", "model_stream_error_exception", OTHER)
EXPECTED_ERROR_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    Api.OPENAI_CHAT.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.OPENAI_RESPONSES.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.ANTHROPIC_MESSAGES.value: ("overloaded_error", "api_error", "rate_limit_error", OTHER),
    Api.OPENAI_COMPLETIONS.value: ("server_error", "rate_limit_exceeded", OTHER),
    Api.GEMINI.value: ("resource_exhausted", "unavailable", OTHER),
    Api.GEMINI_JSON.value: ("resource_exhausted", "unavailable", OTHER),
    Api.BEDROCK_CONVERSE.value: _BEDROCK_ERRORS,
    Api.BEDROCK_INVOKE.value: _BEDROCK_ERRORS,
    Api.OLLAMA_CHAT.value: ("error", OTHER),
    Api.OLLAMA_GENERATE.value: ("error", OTHER),
    Api.COHERE_V2.value: ("error", OTHER),
}

#: The values a label can take, where the set is closed (``model``, ``route`` and ``code`` are
#: bounded by configuration instead). The dashboard generator refuses a matcher outside these.
LABEL_VALUES: Final[Mapping[str, frozenset[str]]] = {
    OUTCOME: frozenset(OUTCOMES),
    SIDE: frozenset(SIDES),
    PHASE: frozenset(STALL_PHASES),
    API: frozenset({*APIS, NON_LLM_API}),
    TOKEN_TYPE: frozenset(TOKEN_TYPES),
    USAGE: frozenset(USAGE_VALUES),
    SOURCE: frozenset({PROBE_SOURCE}),
    # three families, one label
    REASON: frozenset({*MISS_REASONS, *CONNECTION_REFUSAL_REASONS, *PROBE_FAILURE_REASONS}),
    KIND: frozenset({*UPSTREAM_ERROR_KINDS, OTHER}),
    STAGE: frozenset(ANALYSIS_STAGES),
    FINISH_REASON: frozenset({*FINISH_REASONS, OTHER}),
    ERROR_TYPE: frozenset({*ERROR_TYPES, OTHER}),
    TIMING: frozenset(TIMINGS),
}

# --- buckets --------------------------------------------------------------------------------------

# Every bucket is a series per label set, so each histogram has the fewest bounds that still
# answer its questions; the OTLP exporter can use base-2 exponential histograms for fine resolution.

#: TTFB and durations an upstream reports: 100 ms (a warm cache, a gateway answering from memory)
#: up to 5 min (reasoning models think for minutes before the first token; client defaults stop at
#: 10 s). Per route and API only, so resolution below 250 ms costs little.
LATENCY_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
#: TTFT, per model: the same range with the bounds no objective sits on taken out (100 ms: no LLM
#: objective is set below 250 ms; 60 s: nobody alerts between 30 s and 5 min), dense around
#: 0.5..10 s where TTFT objectives sit. The mixin's TTFT objective must be one of these bounds
#: (the SLI reads the ``le`` bucket).
TTFT_BUCKETS: Final = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 300.0)
#: Inter-chunk gaps: 10 ms (tokens at 100/s) up to the default stall threshold (10 s); a longer
#: gap is a stall, counted by the stall families, so it needs no bucket of its own beyond +Inf.
#: Steps of 2-5x: a gap's p99 is read for its order of magnitude, not its millisecond.
GAP_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Decode rate: 10 tok/s (an overloaded or CPU backend) to 500 tok/s (speculative decoding, fast
#: inference hardware); the interesting band for hosted models, 20..200, in steps of 2-2.5x.
TOKENS_PER_SECOND_BUCKETS: Final = (10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
#: Whole-stream duration: 1 s up to 1 h (long agentic or reasoning streams).
DURATION_BUCKETS: Final = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

#: Event-loop lag (the watchdog tick's lateness): 1 ms is noise, 25 ms is a visible hiccup in a
#: stream, 1 s is an outage of every stream on the loop.
LOOP_LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# --- the families ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as every exporter and generator sees it."""

    name: str  # the Prometheus name; counters end in ``_total``, histograms add _bucket/_sum/_count
    kind: Kind
    help: str  # one sentence: the Prometheus HELP line and the OTLP description
    unit: str  # UCUM, for OTLP and the README ("s", "{token}/s", "{stream}")
    labels: tuple[str, ...]
    doc: str  # the README's "meaning" column (Markdown)
    buckets: tuple[float, ...] = ()
    multiprocess_mode: MultiprocessMode = "all"
    #: the OTLP instrument name: a GenAI conventions metric where one fits, else ``streamwatch.*``;
    #: empty for families not pushed over OTLP (build info is the resource's service.version)
    otel: str = ""

    @property
    def base(self) -> str:
        """The name without ``_total``, as recording rules and OpenMetrics name a counter."""
        return self.name.removesuffix("_total")

    def series(self, suffix: str = "") -> str:
        """A series name of this family (``_bucket``, ``_count``, ``_sum`` for histograms)."""
        if suffix and self.kind != "histogram":
            raise ValueError(f"{self.name} is a {self.kind}, it has no {suffix} series")
        return self.name + suffix


REQUESTS: Final = Family(
    "streamwatch_requests_total",
    "counter",
    "Proxied requests, by the HTTP status code returned to the client.",
    "{request}",
    (*ROUTE_API, CODE),
    "every proxied request, by status returned",
    otel="streamwatch.requests",
)
STREAMS: Final = Family(
    "streamwatch_streams_total",
    "counter",
    "Analyzed streams that ended, one outcome per stream.",
    "{stream}",
    (*STREAM_LABELS, OUTCOME),
    "analyzed streams ended, one outcome each",
    otel="streamwatch.streams",
)
STREAMS_ACTIVE: Final = Family(
    "streamwatch_streams_active",
    "gauge",
    "Analyzed streams open right now.",
    "{stream}",
    ROUTE_API,
    "open analyzed streams",
    multiprocess_mode="livesum",  # --workers: sum over live workers
    otel="streamwatch.streams.active",
)
STREAMS_STALLED: Final = Family(
    "streamwatch_streams_stalled",
    "gauge",
    "Open analyzed streams that are stalled right now.",
    "{stream}",
    ROUTE_API,
    "open streams stalled right now",
    multiprocess_mode="livesum",
    otel="streamwatch.streams.stalled",
)
STALLS: Final = Family(
    "streamwatch_stalls_total",
    "counter",
    "Stall episodes, counted when the silence crosses the stall threshold.",
    "{stall}",
    (*ROUTE_API, PHASE),
    "stall episodes (`before_first_token`, `mid_stream`), counted when the threshold is crossed",
    otel="streamwatch.stalls",
)
TTFB: Final = Family(
    "streamwatch_time_to_first_byte_seconds",
    "histogram",
    "Time from the request's headers to the first response body byte from upstream.",
    "s",
    ROUTE_API,
    "TTFB",
    LATENCY_BUCKETS,
    otel="streamwatch.time_to_first_byte",
)
TTFT: Final = Family(
    "streamwatch_time_to_first_token_seconds",
    "histogram",
    "Time from the request's headers to the first output event of the stream.",
    "s",
    STREAM_LABELS,
    "TTFT",
    TTFT_BUCKETS,
    otel="gen_ai.client.inference.time_to_first_chunk",
)
GAP: Final = Family(
    "streamwatch_inter_chunk_gap_seconds",
    "histogram",
    "Time between consecutive output events of a stream.",
    "s",
    STREAM_LABELS,
    "every gap between output events",
    GAP_BUCKETS,
    otel="gen_ai.client.inference.time_per_output_chunk",
)
TOKENS_PER_SECOND: Final = Family(
    "streamwatch_output_tokens_per_second",
    "histogram",
    "Decode rate of a stream: output tokens after the first per second of generation.",
    "{token}/s",
    STREAM_LABELS,
    "decode rate, one per stream",
    TOKENS_PER_SECOND_BUCKETS,
    otel="streamwatch.output_tokens_per_second",
)
DURATION: Final = Family(
    "streamwatch_stream_duration_seconds",
    "histogram",
    "Time from the request's headers to the end of the stream.",
    "s",
    ROUTE_API,
    "request → stream end",
    DURATION_BUCKETS,
    otel="gen_ai.client.inference.duration",
)
UPSTREAM_REPORTED: Final = Family(
    "streamwatch_upstream_reported_seconds",
    "histogram",
    "Durations the upstream reported in its own stream (Bedrock latencyMs and invocation"
    " metrics, Ollama's durations) or announced in its response headers (Envoy, OpenAI,"
    " LiteLLM), by name; set beside TTFT and duration they say how much of the time the provider"
    " or the gateway accounts for.",
    "s",
    (*ROUTE_API, TIMING),
    "durations the upstream reported in its frames (`bedrock_latency`, "
    "`bedrock_invocation_latency`, `bedrock_first_byte_latency`, `ollama_total`, `ollama_load`, "
    "`ollama_prompt_eval`, `ollama_eval`) or announced in its headers (`envoy_upstream_service`, "
    "`openai_processing`, `litellm_response`, `litellm_overhead`, `litellm_callback`; "
    "[docs/provider-side.md](docs/provider-side.md))",
    LATENCY_BUCKETS,
    otel="streamwatch.upstream_reported",
)
FINISH_REASONS_TOTAL: Final = Family(
    "streamwatch_finish_reasons_total",
    "counter",
    "Finish reasons reported by streams, unknown values counted as other.",
    "{stream}",
    (*ROUTE_API, FINISH_REASON),
    "known reasons, else `other`",
    otel="streamwatch.finish_reasons",
)
ERROR_FRAMES: Final = Family(
    "streamwatch_error_frames_total",
    "counter",
    "Mid-stream error events, by provider error type (bounded set plus other).",
    "{event}",
    (*ROUTE_API, ERROR_TYPE),
    "mid-stream error events (bounded set + `other`)",
    otel="streamwatch.error_frames",
)
TOKENS: Final = Family(
    "streamwatch_tokens_total",
    "counter",
    "Tokens the streams reported in their own usage, by token type.",
    "{token}",
    (*ROUTE_API, TOKEN_TYPE),
    "reported usage: `input`, `output`, `reasoning`, `cached_input`",
)
OUTPUT_EVENTS: Final = Family(
    "streamwatch_output_events_total",
    "counter",
    "Output events (text, reasoning, refusal or tool-call deltas) seen in streams.",
    "{event}",
    ROUTE_API,
    "output events",
    otel="streamwatch.output_events",
)
DELIVERED_OUTPUT_TOKENS: Final = Family(
    "streamwatch_delivered_output_tokens_total",
    "counter",
    "Output tokens delivered by every stream whatever its outcome, from its own usage report "
    "(usage=reported) or estimated from its output events (usage=estimated).",
    "{token}",
    (*ROUTE_API, USAGE),
    "output tokens delivered by every stream whatever its outcome: `reported` (its own usage) "
    "or `estimated` (from its output events)",
    otel="streamwatch.delivered_output_tokens",
)
UPSTREAM_ERRORS: Final = Family(
    "streamwatch_upstream_errors_total",
    "counter",
    "Upstream requests that failed before a response, by failure kind.",
    "{request}",
    (ROUTE, SIDE, KIND),
    "upstream failed before a response: `connect`, `tls` (certificate or handshake), `timeout`, `protocol`",
    otel="streamwatch.upstream_errors",
)
UPSTREAM_RETRIES: Final = Family(
    "streamwatch_upstream_retries_total",
    "counter",
    "Requests sent once more on a new upstream connection because the reused keep-alive "
    "connection they were sent on closed before any response byte (the upstream's idle timeout "
    "fired as the request arrived).",
    "{request}",
    (ROUTE, SIDE),
    "requests sent again after a reused keep-alive connection closed before answering "
    "(replayable requests only; a steady rate means the upstream's keep-alive timeout is short)",
    otel="streamwatch.upstream_retries",
)
CONNECTIONS_REFUSED: Final = Family(
    "streamwatch_connections_refused_total",
    "counter",
    "Client connections refused before a request was read: over --max-connections, or accept() "
    "failing for lack of file descriptors.",
    "{connection}",
    (REASON,),
    "client connections refused before a request was read: `max_connections`, "
    "`out_of_file_descriptors`",
)
ANALYSIS_ERRORS: Final = Family(
    "streamwatch_analysis_errors_total",
    "counter",
    "Analyzer faults, oversize events and malformed frames; the bytes still flowed.",
    "{event}",
    (*ROUTE_API, STAGE),
    "analyzer faults, malformed and oversize frames (the bytes still flowed)",
    otel="streamwatch.analysis_errors",
)
BUILD_INFO: Final = Family(
    "streamwatch_build_info",
    "gauge",
    "Always 1; the version label carries the streamwatch version.",
    "",
    (VERSION,),
    "1",
    multiprocess_mode="max",  # --workers: 1, not one per worker
)

# goodput: streams judged against their model's (slo_by_model:) or their route's objectives
# (--slo-ttft, --slo-tpot, --slo-no-stall, a route's slo:)
SLO_MET: Final = Family(
    "streamwatch_slo_met_total",
    "counter",
    "Streams that completed and met every goodput objective of their model or route.",
    "{stream}",
    STREAM_LABELS,
    "goodput: streams that met every objective (streams with objectives only)",
    otel="streamwatch.slo.met",
)
SLO_MISSED: Final = Family(
    "streamwatch_slo_missed_total",
    "counter",
    "Streams judged against goodput objectives that missed one, by the first objective missed.",
    "{stream}",
    (*ROUTE_API, REASON),
    "streams that missed an objective, by the first missed: `outcome`, `ttft`, `tpot`, `stall`",
    otel="streamwatch.slo.missed",
)

# streamwatch's own health (with prometheus-client's process_* collector: CPU, RSS, open fds)
EVENT_LOOP_LAG: Final = Family(
    "streamwatch_event_loop_lag_seconds",
    "histogram",
    "How late the watchdog's periodic tick ran: time the event loop spent on something else.",
    "s",
    (),
    "event-loop lag: the watchdog tick's lateness (a blocked loop delays every stream)",
    LOOP_LAG_BUCKETS,
)
CLIENT_CONNECTIONS: Final = Family(
    "streamwatch_client_connections",
    "gauge",
    "Client connections open on the proxy port right now.",
    "{connection}",
    (),
    "open client connections on the proxy port",
    multiprocess_mode="livesum",
)
#: How a ``serve --capture-dir`` capture ended: kept; deleted because the stream completed cleanly
#: (``--capture-keep problems``); dropped because it passed ``--capture-max-stream-bytes``, because
#: the writer fell behind the byte path, because open captures alone filled
#: ``--capture-max-bytes``, or because the disk refused a write.
CAPTURE_SAVED: Final = "saved"
CAPTURE_SKIPPED: Final = "skipped"
CAPTURE_TOO_LARGE: Final = "too_large"
CAPTURE_BACKLOG: Final = "backlog"
CAPTURE_NO_ROOM: Final = "no_room"
CAPTURE_FAILED: Final = "failed"
CAPTURE_RESULTS: Final = (
    CAPTURE_SAVED,
    CAPTURE_SKIPPED,
    CAPTURE_TOO_LARGE,
    CAPTURE_BACKLOG,
    CAPTURE_NO_ROOM,
    CAPTURE_FAILED,
)
CAPTURES: Final = Family(
    "streamwatch_captures_total",
    "counter",
    "Stream captures of serve --capture-dir, by how each ended (saved, skipped or dropped).",
    "{capture}",
    (RESULT,),
    "`--capture-dir` captures by `result`: `saved`, `skipped` (completed cleanly), dropped "
    "(`too_large`, `backlog`, `no_room`, `failed`)",
)
LOG_LINES_DROPPED: Final = Family(
    "streamwatch_log_lines_dropped_total",
    "counter",
    "Log lines dropped because the log output did not take them: the queue to the log writer "
    "was full (the reader of stderr stopped reading) or the write failed.",
    "{line}",
    (),
    "log lines dropped, never waited for: the log writer's queue (`--log-queue`) was full "
    "because the reader of stderr stopped reading, or the write failed (`log.lines_dropped` "
    "lines say how many once the output takes lines again)",
)
ROUTE_INFO: Final = Family(
    "streamwatch_route_info",
    "gauge",
    "Always 1 per configured route; the labels carry its side and upstream origin.",
    "",
    (ROUTE, SIDE, UPSTREAM),
    "1 per configured route, with its side and upstream origin",
    multiprocess_mode="max",
)

# --- OTLP ---------------------------------------------------------------------------------------

#: The GenAI semantic conventions these names follow: open-telemetry/semantic-conventions-genai
#: (development status, not yet released), docs/gen-ai/client-inference.md at ac48b1f and
#: model/gen-ai/token-metrics.yaml at 066d4a7 (PR #521 renamed the streaming metrics to
#: ``gen_ai.client.inference.*``; PR #536 made usage counters with ``gen_ai.token.modality``).
GENAI_CONVENTIONS: Final = "semantic-conventions-genai@ac48b1f"
#: ``tokens_total``'s ``type`` values as the conventions' usage counters (``streamwatch_tokens_total``
#: has no instrument of its own over OTLP), plus the cache writes Prometheus does not count.
GENAI_USAGE: Final[Mapping[str, str]] = {
    "input": "gen_ai.client.inference.usage.input_tokens",
    "output": "gen_ai.client.inference.usage.output_tokens",
    "reasoning": "gen_ai.client.inference.usage.reasoning.output_tokens",
    "cached_input": "gen_ai.client.inference.usage.cache_read.input_tokens",
    "cache_write": "gen_ai.client.inference.usage.cache_write.input_tokens",
}
#: A label's OTLP attribute key: a conventions attribute where one means the same, else ours.
_OTEL_ATTRIBUTES: Final[Mapping[str, str]] = {
    MODEL: "gen_ai.response.model",
    ERROR_TYPE: "error.type",
    CODE: "http.response.status_code",
}


def otel_attribute(label: str) -> str:
    """The OTLP attribute key of a Prometheus label (``streamwatch.<label>`` unless the
    conventions have one)."""
    return _OTEL_ATTRIBUTES.get(label, f"streamwatch.{label}")


#: Every family, in the README's order.
FAMILIES: Final = (
    REQUESTS,
    STREAMS,
    STREAMS_ACTIVE,
    STREAMS_STALLED,
    STALLS,
    TTFB,
    TTFT,
    GAP,
    TOKENS_PER_SECOND,
    DURATION,
    UPSTREAM_REPORTED,
    FINISH_REASONS_TOTAL,
    ERROR_FRAMES,
    TOKENS,
    OUTPUT_EVENTS,
    DELIVERED_OUTPUT_TOKENS,
    UPSTREAM_ERRORS,
    UPSTREAM_RETRIES,
    CONNECTIONS_REFUSED,
    ANALYSIS_ERRORS,
    BUILD_INFO,
    SLO_MET,
    SLO_MISSED,
    EVENT_LOOP_LAG,
    CLIENT_CONNECTIONS,
    CAPTURES,
    LOG_LINES_DROPPED,
    ROUTE_INFO,
)
BY_NAME: Final[Mapping[str, Family]] = {f.name: f for f in FAMILIES}

# --- streamwatch probe only (its own /metrics; the per-stream families above carry source="probe") --

TARGET: Final = "target"  # a probe target's configured name
PROBE_PASSED: Final = "passed"
PROBE_FAILED: Final = "failed"
PROBE_RESULTS: Final = (PROBE_PASSED, PROBE_FAILED)
PROBE_SUCCESS: Final = Family(
    "streamwatch_probe_success",
    "gauge",
    "1 if the target's last probe stream passed (200, output, completed), else 0.",
    "",
    (TARGET,),
    "`streamwatch probe` only: 1 if the target's last probe passed",
)
PROBE_LAST_SUCCESS: Final = Family(
    "streamwatch_probe_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the target's last passing probe.",
    "s",
    (TARGET,),
    "`streamwatch probe` only: when the target last passed",
)
PROBES: Final = Family(
    "streamwatch_probes_total",
    "counter",
    "Probe streams sent to a target, by verdict.",
    "{probe}",
    (TARGET, RESULT),
    "`streamwatch probe` only: probes by `result` (`passed`, `failed`)",
)
PROBE_FAILURES: Final = Family(
    "streamwatch_probe_failures_total",
    "counter",
    "Failed probes of a target, by reason: a failure before any response, a status, or a stream.",
    "{probe}",
    (TARGET, REASON),
    "`streamwatch probe` only: failed probes by `reason`: before a response `connect`, `tls`, "
    "`timeout`, `protocol`; then `http_status`, `not_a_stream`, the stream's outcome, `no_output`",
)
PROBE_FAMILIES: Final = (PROBE_SUCCESS, PROBE_LAST_SUCCESS, PROBES, PROBE_FAILURES)


def _seconds(bound: float) -> str:
    return f"{bound * 1000:g} ms" if bound < 1 else f"{bound:g} s"


def _bucket_summary(family: Family) -> str:
    if not family.buckets:
        return ""
    low, high = family.buckets[0], family.buckets[-1]
    if family.unit == "s":
        span = f"{_seconds(low)} … {_seconds(high)}"
    else:
        span = f"{low:g} … {high:g} {family.unit.replace('{', '').replace('}', '')}"
    return f"{len(family.buckets)}: {span}"


def markdown_table() -> str:
    """The README's metric table, one row per family (``dashboards/generate.py`` writes it)."""
    rows = [
        "| metric | type | labels | buckets | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in (*FAMILIES, *PROBE_FAMILIES):
        labels = ", ".join(f"`{label}`" for label in f.labels)
        rows.append(f"| `{f.name}` | {f.kind} | {labels} | {_bucket_summary(f)} | {f.doc} |")
    return "\n".join(rows) + "\n"
