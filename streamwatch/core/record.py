"""The one immutable record a stream leaves behind when it closes (metrics, span and log line)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase


class CloseCause(StrEnum):
    """Why the proxy stopped feeding the analyzer."""

    UPSTREAM_EOF = "upstream_eof"  # upstream ended the body cleanly
    UPSTREAM_RESET = "upstream_reset"  # upstream transport failed mid-body
    UPSTREAM_TIMEOUT = "upstream_timeout"  # upstream was silent past the read timeout
    CLIENT_ABORT = "client_abort"  # the client went away before upstream ended the body
    SHUTDOWN = "shutdown"  # the drain deadline passed during a graceful shutdown


class Outcome(StrEnum):
    """Exactly one per stream; :func:`outcome_of` gives the precedence."""

    ERROR_FRAME = "error_frame"
    CLIENT_ABORT = "client_abort"
    SHUTDOWN = "shutdown"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESET = "upstream_reset"
    TRUNCATED = "truncated"
    COMPLETED = "completed"


_OUTCOME_OF_CAUSE = {
    CloseCause.CLIENT_ABORT: Outcome.CLIENT_ABORT,
    CloseCause.SHUTDOWN: Outcome.SHUTDOWN,
    CloseCause.UPSTREAM_TIMEOUT: Outcome.UPSTREAM_TIMEOUT,
    CloseCause.UPSTREAM_RESET: Outcome.UPSTREAM_RESET,
}


def outcome_of(*, error_frames: int, cause: CloseCause, terminal_delivered: bool | None) -> Outcome:
    """First that applies: error frame > client abort > shutdown > timeout > reset > truncated.

    ``terminal_delivered`` says whether the protocol's terminal frame was written to the client
    (None: the protocol has none, as for uninterpreted event streams). Once it was, the verdict is
    settled: the OpenAI SDKs close their connection at ``[DONE]``, and gateways such as LiteLLM
    end the body a moment later, so what happens after the terminal frame is not a client abort,
    a timeout or a reset of that stream.
    """
    if error_frames:
        return Outcome.ERROR_FRAME
    if terminal_delivered:
        return Outcome.COMPLETED
    if cause is CloseCause.UPSTREAM_EOF:
        return Outcome.TRUNCATED if terminal_delivered is False else Outcome.COMPLETED
    return _OUTCOME_OF_CAUSE[cause]


#: Upstream-reported durations by fixed name (a bounded label set): Bedrock ConverseStream's
#: ``metadata.metrics.latencyMs``; the ``amazon-bedrock-invocationMetrics`` of invoke bodies
#: (``invocationLatency``, ``firstByteLatency``); Ollama's final-line ``total_duration``,
#: ``load_duration``, ``prompt_eval_duration`` and ``eval_duration``.
UPSTREAM_TIMINGS: Final = (
    "bedrock_latency",
    "bedrock_invocation_latency",
    "bedrock_first_byte_latency",
    "ollama_total",
    "ollama_load",
    "ollama_prompt_eval",
    "ollama_eval",
)
MAX_REPORTED_NS: Final = 86_400 * 1_000_000_000
"""A reported duration above a day is not believed (a unit mix-up or junk): it is ignored."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as the stream itself reported it (None where the provider did not say)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """One mid-stream error event: its SSE index, provider error type and (capped) message."""

    event_index: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A streamed tool / function call. ``arguments`` is kept only when content capture is on."""

    name: str | None
    call_id: str | None
    arguments_chars: int
    arguments: str | None = None
    choice: int = 0


@dataclass(frozen=True, slots=True)
class StallEpisode:
    """A period of silence longer than the threshold; ``end_ns`` None if the stream ended stalled."""

    phase: StallPhase
    start_ns: int
    end_ns: int | None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """Everything measured about one stream, final once the stream has closed.

    Times are on the caller's monotonic clock in ns; durations are ns; None means "did not happen".
    ``output_tokens`` comes from reported usage when present, else it is the number of output
    events and ``output_tokens_estimated`` is True.
    """

    api: Api
    request_model: str | None
    response_model: str | None
    response_id: str | None
    outcome: Outcome
    close_cause: CloseCause
    t_request_ns: int
    t_end_ns: int
    ttfb_ns: int | None
    ttft_ns: int | None
    max_gap_ns: int | None
    output_events: int
    first_output_event_index: int | None
    frames: int
    """Frames of the stream's framing: SSE events, NDJSON lines, event-stream messages or JSON
    array elements (``sse_events`` until every framing was read)."""
    body_bytes: int
    usage: Usage | None
    output_tokens: int
    output_tokens_estimated: bool
    tokens_per_second: float | None
    finish_reasons: tuple[str, ...]
    terminal_frame: str | None
    error_frames: tuple[ErrorFrame, ...]
    stalls: tuple[StallEpisode, ...]
    malformed_frames: int
    oversize_events: int
    undispatched_tail: bool
    text_chars: int
    reasoning_chars: int
    refusal_chars: int
    tool_calls: tuple[ToolCall, ...]
    captured_text: str | None = None
    analysis_failed: bool = False
    upstream_timings: tuple[tuple[str, int], ...] = ()
    """Durations the upstream reported in its own frames, ns, by a name of
    :data:`UPSTREAM_TIMINGS` (Bedrock's ``latencyMs``, Ollama's ``eval_duration``, ...)."""

    @property
    def duration_ns(self) -> int:
        """``t_request`` to stream end."""
        return self.t_end_ns - self.t_request_ns

    @property
    def model(self) -> str | None:
        """The response model, else the request model (the ``model`` label's source)."""
        return self.response_model or self.request_model


def unanalyzed_record(
    *,
    api: Api,
    request_model: str | None,
    t_request_ns: int,
    t_end_ns: int,
    cause: CloseCause,
    body_bytes: int,
) -> StreamRecord:
    """The record of a stream whose analysis failed: transport facts only, flagged."""
    return StreamRecord(
        api=api,
        request_model=request_model,
        response_model=None,
        response_id=None,
        outcome=_OUTCOME_OF_CAUSE.get(cause, Outcome.COMPLETED),
        close_cause=cause,
        t_request_ns=t_request_ns,
        t_end_ns=t_end_ns,
        ttfb_ns=None,
        ttft_ns=None,
        max_gap_ns=None,
        output_events=0,
        first_output_event_index=None,
        frames=0,
        body_bytes=body_bytes,
        usage=None,
        output_tokens=0,
        output_tokens_estimated=True,
        tokens_per_second=None,
        finish_reasons=(),
        terminal_frame=None,
        error_frames=(),
        stalls=(),
        malformed_frames=0,
        oversize_events=0,
        undispatched_tail=False,
        text_chars=0,
        reasoning_chars=0,
        refusal_chars=0,
        tool_calls=(),
        analysis_failed=True,
    )
