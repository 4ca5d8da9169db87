"""What every protocol interpreter shares: the per-stream reading it fills and its verdict flags.

An interpreter reads one frame (an SSE message, a JSON array element, an event-stream message,
an NDJSON line) at a time and returns its verdict: :class:`Frame` flags (output, the terminal
frame) for the usual frame, or :class:`Facts` when the frame also carried an error or could not be
read. What the stream says about itself (model, usage, finish reasons, tool calls, lengths)
accumulates in a :class:`Reading`, whose every upstream-keyed collection is capped. Interpreters
never raise on remote input: a payload they cannot read is a ``Facts(malformed=...)`` verdict, and
the proxy forwards it untouched anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any, Protocol, TypeVar, final

import orjson

from streamwatch.core.limits import MAX_CHOICES, MAX_TOOL_CALLS, cap
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
    """What one SSE message meant to the interpreter (both flags may apply)."""

    NONE = 0
    OUTPUT = 1  # carried generated output: text, reasoning, refusal or a tool-call fragment
    TERMINAL = 2  # the protocol's end-of-stream frame (marker in Reading.terminal_frame)


@final  # lets ``type(verdict) is Facts`` (cheaper than isinstance) narrow the verdict
@dataclass(frozen=True, slots=True)
class Facts:
    """A message's verdict when flags are not enough: the mid-stream error frame it carried, or the
    reason it could not be read (a short fixed word such as ``json``), besides its flags."""

    frame: Frame = Frame.NONE
    error: ErrorFrame | None = None
    malformed: str | None = None


Verdict = Frame | Facts

# The verdicts as plain module constants, for the per-frame paths: on Python 3.11 an enum member
# read off its class is an unspecialised class attribute lookup, about three times a global's cost.
NONE, OUTPUT, TERMINAL = Frame.NONE, Frame.OUTPUT, Frame.TERMINAL
"""What :meth:`Interpreter.read` returns: plain flags for the usual message (no allocation)."""

MALFORMED_JSON = Facts(malformed="json")
NOT_AN_OBJECT = Facts(malformed="not_an_object")
USAGE_OUT_OF_RANGE = "usage_out_of_range"


def error_frame(
    index: int,
    error_type: str,
    message: str,
    frame: Frame = Frame.NONE,
    *,
    malformed: str | None = None,
) -> Facts:
    """The verdict on an error frame; both strings come through :func:`as_str`, already capped."""
    return Facts(frame, error=ErrorFrame(index, error_type, message), malformed=malformed)


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

    Content is never kept unless ``capture_content`` is set: only its length in code points. The
    upstream chooses the keys of ``finish_reasons`` (a choice index) and of the tool calls, so both
    are capped (``max_choices``, ``max_tool_calls``): past the cap a new key is ignored.
    """

    capture_content: bool = False
    capture_limit_chars: int = 0
    max_choices: int = MAX_CHOICES
    max_tool_calls: int = MAX_TOOL_CALLS
    model: str | None = None
    response_id: str | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)
    usage: Usage | None = None
    terminal_frame: str | None = None
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

    def timing(self, name: str, value: object, ns_per_unit: int) -> None:
        """Keep a duration the upstream reported (``name`` from :data:`UPSTREAM_TIMINGS`), if it
        is a sane non-negative integer; ``ns_per_unit`` converts its unit to ns."""
        if type(value) is int and 0 <= value * ns_per_unit <= MAX_REPORTED_NS:
            self.upstream_timings[name] = value * ns_per_unit

    def finish_reason(self, choice: int, reason: str) -> None:
        """Choice ``choice`` finished for ``reason`` (already capped); a new choice past the cap is
        ignored."""
        reasons = self.finish_reasons
        if choice in reasons or len(reasons) < self.max_choices:
            reasons[choice] = reason

    def tool_call(
        self,
        key: int | str,
        *,
        choice: int = 0,
        name: str | None = None,
        call_id: str | None = None,
    ) -> None:
        """Note a tool call's start (or update its name/id); ``key`` identifies it in the stream."""
        self._call(key, choice, name, call_id)

    def _call(
        self, key: int | str, choice: int, name: str | None, call_id: str | None
    ) -> _ToolCallParts | None:
        calls = self._tool_calls
        call = calls.get((choice, key))
        if call is None:
            if len(calls) >= self.max_tool_calls:
                return None
            parts: list[str] | None = [] if self.capture_content else None
            call = calls[(choice, key)] = _ToolCallParts(name, call_id, choice, parts=parts)
            return call
        call.name = call.name or name
        call.call_id = call.call_id or call_id
        return call

    def tool_arguments(self, key: int | str, fragment: str, *, choice: int = 0) -> None:
        """A fragment of a tool call's arguments: counted, and kept (up to the capture limit per
        call) only with content capture on."""
        call = self._tool_calls.get((choice, key)) or self._call(key, choice, None, None)
        if call is None:
            return
        call.chars += len(fragment)
        if call.parts is not None:
            kept = call.chars - len(fragment)  # characters already captured, if all fitted
            if kept < self.capture_limit_chars:
                call.parts.append(fragment[: self.capture_limit_chars - kept])

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

    def read(self, message: F_contra, index: int, reading: Reading) -> Verdict: ...


class GenericSSE:
    """Unrecognised event streams are timed, not interpreted: no message counts as output."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        return Frame.NONE


def load_object(data: str | bytes) -> dict[str, Any] | Facts:
    """Parse a JSON object payload; anything else is the malformed verdict to return."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return MALFORMED_JSON
    if not isinstance(obj, dict):
        return NOT_AN_OBJECT
    return obj


def as_int(value: object) -> int | None:
    """A token count if the provider sent an integer (bool and junk are ignored)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_usage(**counts: object) -> Usage | None:
    """A :class:`Usage` of the given counts (missing or null ones stay None).

    A count that is not an int in ``0..MAX_TOKEN_COUNT`` (u64 max, negative, a float, a string, a
    bool) makes the whole report untrustworthy: None is returned, and the caller ignores the report
    and returns a ``Facts(frame, malformed=USAGE_OUT_OF_RANGE)`` verdict.
    """
    checked: dict[str, int | None] = {}
    for name, value in counts.items():
        if value is None or (type(value) is int and 0 <= value <= MAX_TOKEN_COUNT):
            checked[name] = value
        else:
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
