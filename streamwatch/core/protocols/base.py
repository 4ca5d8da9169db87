"""What every protocol interpreter shares: the per-stream reading it fills and its verdict flags.

An interpreter reads one frame (an SSE message, a JSON array element, an event-stream message,
an NDJSON line) at a time and says, with :class:`Frame` flags, whether it carried output, an
error, or the terminal frame; the details accumulate in a :class:`Reading`. Interpreters never
raise on remote input: a payload they cannot read is reported as ``MALFORMED`` and forwarded
untouched by the proxy anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any, Protocol, TypeVar

import orjson

from streamwatch.core.limits import cap
from streamwatch.core.record import MAX_REPORTED_NS, ErrorFrame, ToolCall, Usage
from streamwatch.core.sse import MessageDispatched

F_contra = TypeVar("F_contra", contravariant=True)

#: The OpenAI family's end-of-stream sentinel. Terminal on Chat Completions; gateways (LiteLLM) also
#: append it to Responses streams, where it is known and means nothing, never a malformed frame.
DONE = "[DONE]"

#: The largest token count believed. A u64 max froze ``tokens_total`` and a negative count broke
#: tokens/s: 2**31 - 1 is orders of magnitude above any context window and exact in a float64.
MAX_TOKEN_COUNT = (1 << 31) - 1


class Frame(IntFlag):
    """What one SSE message meant to the interpreter (several flags may apply)."""

    NONE = 0
    OUTPUT = 1  # carried generated output: text, reasoning, refusal or a tool-call fragment
    ERROR = 2  # a mid-stream error frame (details appended to Reading.error_frames)
    TERMINAL = 4  # the protocol's end-of-stream frame (marker in Reading.terminal_frame)
    MALFORMED = 8  # the payload could not be read (reason in Reading.last_malformed)


@dataclass(slots=True)
class _ToolCallParts:
    name: str | None
    call_id: str | None
    choice: int
    chars: int = 0
    parts: list[str] | None = None


@dataclass(slots=True)
class Reading:
    """Everything an interpreter learned so far from one stream (mutable while the stream is open).

    Content is never kept unless ``capture_content`` is set: only its length in code points.
    """

    capture_content: bool = False
    capture_limit_chars: int = 0
    model: str | None = None
    response_id: str | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)
    usage: Usage | None = None
    terminal_frame: str | None = None
    error_frames: list[ErrorFrame] = field(default_factory=list)
    malformed_frames: int = 0
    last_malformed: str = ""
    text_chars: int = 0
    reasoning_chars: int = 0
    refusal_chars: int = 0
    upstream_timings: dict[str, int] = field(default_factory=dict)
    _tool_calls: dict[tuple[int, int | str], _ToolCallParts] = field(default_factory=dict)
    _text: list[str] = field(default_factory=list)
    _captured_chars: int = 0

    def add_text(self, text: str) -> None:
        self.text_chars += len(text)
        if self.capture_content and self._captured_chars < self.capture_limit_chars:
            piece = text[: self.capture_limit_chars - self._captured_chars]
            self._text.append(piece)
            self._captured_chars += len(piece)

    def tool_call(
        self,
        key: int | str,
        *,
        choice: int = 0,
        name: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Note a tool call's start (or update its name/id); ``key`` identifies it in the stream."""
        call = self._tool_calls.get((choice, key))
        if call is None:
            parts: list[str] | None = [] if self.capture_content else None
            self._tool_calls[(choice, key)] = _ToolCallParts(name, call_id, choice, parts=parts)
            return
        call.name = call.name or name
        call.call_id = call.call_id or call_id

    def tool_arguments(self, key: int | str, fragment: str, *, choice: int = 0) -> None:
        call = self._tool_calls.get((choice, key))
        if call is None:
            self.tool_call(key, choice=choice)
            call = self._tool_calls[(choice, key)]
        call.chars += len(fragment)
        if call.parts is not None:
            call.parts.append(fragment)

    def timing(self, name: str, value: object, ns_per_unit: int) -> None:
        """Keep a duration the upstream reported (``name`` from :data:`UPSTREAM_TIMINGS`), if it
        is a sane non-negative integer; ``ns_per_unit`` converts its unit to ns."""
        if type(value) is int and 0 <= value * ns_per_unit <= MAX_REPORTED_NS:
            self.upstream_timings[name] = value * ns_per_unit

    def error(self, index: int, error_type: str, message: str) -> None:
        """Record an error frame; both strings come through :func:`as_str`, already capped."""
        self.error_frames.append(ErrorFrame(index, error_type, message))

    def malformed(self, reason: str) -> Frame:
        self.malformed_frames += 1
        self.last_malformed = reason
        return Frame.MALFORMED

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(
                name=c.name,
                call_id=c.call_id,
                arguments_chars=c.chars,
                arguments=None if c.parts is None else "".join(c.parts),
                choice=c.choice,
            )
            for c in self._tool_calls.values()
        )

    def captured_text(self) -> str | None:
        return "".join(self._text) if self.capture_content else None


class Interpreter(Protocol[F_contra]):
    """Reads one frame of its framing (an SSE message, an array element, an event-stream message,
    an NDJSON line) into a :class:`Reading`; ``index`` counts the stream's frames from 0."""

    def read(self, message: F_contra, index: int, reading: Reading) -> Frame: ...


class Noting(Protocol):
    """An interpreter that also reads decoder facts that are not frames (ignored SSE fields, the
    JSON array's closing bracket); ``index`` is the number of frames before the fact."""

    def note(self, item: object, index: int, reading: Reading) -> Frame: ...


class GenericSSE:
    """Unrecognised event streams are timed, not interpreted: no message counts as output."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Frame:
        return Frame.NONE


def load_object(data: str | bytes, reading: Reading) -> dict[str, Any] | None:
    """Parse a JSON object payload; anything else is counted as malformed and yields None."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        reading.malformed("json")
        return None
    if not isinstance(obj, dict):
        reading.malformed("not_an_object")
        return None
    return obj


def as_int(value: object) -> int | None:
    """A token count if the provider sent an integer (bool and junk are ignored)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_usage(reading: Reading, **counts: object) -> Usage | None:
    """A :class:`Usage` of the given counts (missing or null ones stay None).

    A count that is not an int in ``0..MAX_TOKEN_COUNT`` (u64 max, negative, a float, a string, a
    bool) makes the whole report untrustworthy: it is ignored and counted as a malformed frame, and
    None is returned (the caller adds ``Frame.MALFORMED`` to its verdict).
    """
    checked: dict[str, int | None] = {}
    for name, value in counts.items():
        if value is None or (type(value) is int and 0 <= value <= MAX_TOKEN_COUNT):
            checked[name] = value
        else:
            reading.malformed("usage_out_of_range")
            return None
    return Usage(**checked)


def as_str(value: object) -> str | None:
    """A non-empty string field of an upstream event, capped (every identifier enters here)."""
    return cap(value) if isinstance(value, str) and value else None


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def error_fields(error: object) -> tuple[str, str]:
    """(type, message) of a provider error object (a dict, or a bare string in some gateways)."""
    if isinstance(error, str):
        return "error", error
    err = as_dict(error)
    error_type = as_str(err.get("type")) or as_str(err.get("code")) or "error"
    return error_type, as_str(err.get("message")) or ""
