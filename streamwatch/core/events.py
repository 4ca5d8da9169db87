"""What the stream analyzer reports while a stream is open: small frozen facts, named in the past tense.

Times are monotonic nanoseconds from the caller's clock; durations are nanoseconds. The proxy turns
these into metric observations and span events as they happen, so live dashboards do not wait for a
stream to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Api(StrEnum):
    """Which protocol interpreter, over which framing, reads a stream (the ``api`` metric label).

    A fixed set: adding a member adds a label value. ``gemini`` and ``gemini_json`` are the same
    API read from its two framings (``?alt=sse`` event stream, or one streamed JSON array).
    """

    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    OPENAI_COMPLETIONS = "openai_completions"  # legacy /v1/completions
    GEMINI = "gemini"  # :streamGenerateContent?alt=sse
    GEMINI_JSON = "gemini_json"  # :streamGenerateContent, one JSON array as application/json
    BEDROCK_CONVERSE = "bedrock_converse"  # /model/{id}/converse-stream, AWS event stream
    BEDROCK_INVOKE = "bedrock_invoke"  # /model/{id}/invoke-with-response-stream
    OLLAMA_CHAT = "ollama_chat"  # /api/chat, NDJSON
    OLLAMA_GENERATE = "ollama_generate"  # /api/generate, NDJSON
    COHERE_V2 = "cohere_v2"  # /v2/chat
    SSE = "sse"  # an event stream we do not interpret: timed only


class StallPhase(StrEnum):
    """Whether a stall began before the first output event or between two of them."""

    BEFORE_FIRST_TOKEN = "before_first_token"
    MID_STREAM = "mid_stream"


@dataclass(frozen=True, slots=True)
class FirstByteReceived:
    """The first response body byte arrived (TTFB = ``ttfb_ns``)."""

    at_ns: int
    ttfb_ns: int


@dataclass(frozen=True, slots=True)
class FirstTokenReceived:
    """The first output event arrived (TTFT = ``ttft_ns``); ``model`` as the stream named it."""

    at_ns: int
    ttft_ns: int
    model: str | None = None


@dataclass(frozen=True, slots=True)
class OutputReceived:
    """One output event (text, reasoning, refusal or tool-call delta) arrived.

    ``gap_ns`` is the time since the previous output event, None for the first one.
    """

    at_ns: int
    gap_ns: int | None


@dataclass(frozen=True, slots=True)
class ErrorFrameReceived:
    """A mid-stream error event: ``error_type`` as the provider named it, ``message`` capped."""

    at_ns: int
    event_index: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class TerminalFrameReceived:
    """The protocol's end-of-stream frame (``[DONE]``, ``message_stop``, ``response.completed``...)."""

    at_ns: int
    marker: str


@dataclass(frozen=True, slots=True)
class MalformedFrameReceived:
    """An SSE event the interpreter could not read (bad JSON, wrong shape); it was forwarded anyway."""

    at_ns: int
    event_index: int
    reason: str


@dataclass(frozen=True, slots=True)
class OversizeEventDropped:
    """An SSE event passed the decoder's cap and was not analyzed (it was still forwarded)."""

    at_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class StallStarted:
    """Silence passed the threshold: ``since_ns`` is when the silence began, ``at_ns`` when noticed."""

    at_ns: int
    since_ns: int
    phase: StallPhase


@dataclass(frozen=True, slots=True)
class StallEnded:
    """Output resumed (or the stream ended) after a stall that began at ``since_ns``."""

    at_ns: int
    since_ns: int
    phase: StallPhase


@dataclass(frozen=True, slots=True)
class AnalysisStopped:
    """The analyzer (or a sink) raised on this stream: analysis stopped, the bytes kept flowing.

    Emitted by the proxy's tap, never by the analyzer itself; ``stage`` names where it failed.
    """

    at_ns: int
    stage: str


StreamEvent = (
    FirstByteReceived
    | FirstTokenReceived
    | OutputReceived
    | ErrorFrameReceived
    | TerminalFrameReceived
    | MalformedFrameReceived
    | OversizeEventDropped
    | StallStarted
    | StallEnded
    | AnalysisStopped
)
