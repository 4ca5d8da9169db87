"""Gemini ``:streamGenerateContent`` streams, as SSE (``?alt=sse``) or as one JSON array.

Every chunk is a ``GenerateContentResponse``. There is no terminal sentinel: the stream is complete
when a candidate carries ``finishReason`` (or the prompt was refused with
``promptFeedback.blockReason``, when no candidate ever comes); in the JSON-array form the closing
``]`` must follow too. Parts with ``thought: true`` are reasoning, ``functionCall`` parts and code or
media parts are output; a ``thoughtSignature`` alone is not. ``usageMetadata`` is cumulative: the
last one counts. Errors (corpus ERROR_FRAMES.md §4a) are a chunk with a top-level ``error`` object
(``code``, ``message``, ``status``: the status is the error type), or the same object written as
bare lines between events, which the SSE decoder reports as ignored fields.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamwatch.core.json_array import ArrayClosed, ElementReceived
from streamwatch.core.limits import cap
from streamwatch.core.protocols.base import (
    NONE,
    OUTPUT,
    TERMINAL,
    USAGE_OUT_OF_RANGE,
    Facts,
    Frame,
    Reading,
    Verdict,
    as_dict,
    as_int,
    as_str,
    error_frame,
    load_object,
    read_usage,
)
from streamwatch.core.record import Usage
from streamwatch.core.sse import FieldIgnored, MessageDispatched

FINISH = "finishReason"
BLOCKED = "promptFeedback.blockReason"
ARRAY_END = "finishReason+]"
# Parts that are generated output although they carry no text (genai-py types.Part).
_OUTPUT_PARTS = frozenset(
    {"executableCode", "codeExecutionResult", "inlineData", "fileData", "functionResponse"}
)
# A bare error object is collected line by line until its braces balance; past this it is junk.
MAX_BARE_ERROR_CHARS = 64 * 1024
_BARE_TOO_LARGE = Facts(malformed="bare_object_too_large")
_BARE_NOT_AN_ERROR = Facts(malformed="bare_object")


def _usage(usage: dict[str, Any]) -> Usage | None:
    return read_usage(
        input_tokens=usage.get("promptTokenCount"),
        output_tokens=usage.get("candidatesTokenCount"),
        reasoning_tokens=usage.get("thoughtsTokenCount"),
        cached_input_tokens=usage.get("cachedContentTokenCount"),
        total_tokens=usage.get("totalTokenCount"),
    )


def _error_fields(error: object) -> tuple[str, str]:
    """A Google RPC error: ``status`` (``CANCELLED``, ``RESOURCE_EXHAUSTED``…) else ``code``."""
    err = as_dict(error)
    code = err.get("code")
    error_type = as_str(err.get("status")) or (str(code) if as_int(code) is not None else "error")
    return error_type, as_str(err.get("message")) or ""


class _GeminiChunks:
    """What both framings share: reading one parsed chunk. One instance per stream."""

    __slots__ = ("_calls", "_finished")

    def __init__(self) -> None:
        self._calls = 0  # function calls seen: each part is a whole call, keyed by arrival
        self._finished: str | None = None  # marker once finishReason or blockReason was seen

    def chunk(self, payload: dict[str, Any] | Facts, index: int, reading: Reading) -> Verdict:
        if type(payload) is Facts:
            return payload
        error = payload.get("error")
        if error:
            return error_frame(index, *_error_fields(error))
        frame = NONE
        malformed: str | None = None
        if reading.model is None:
            reading.model = as_str(payload.get("modelVersion"))
            reading.response_id = as_str(payload.get("responseId"))
        candidates = payload.get("candidates")
        if type(candidates) is list:
            for candidate in candidates:
                if type(candidate) is dict and self._candidate(candidate, reading):
                    frame = OUTPUT
        usage = payload.get("usageMetadata")
        if type(usage) is dict:
            checked = _usage(usage)
            if checked is None:
                malformed = USAGE_OUT_OF_RANGE
            else:
                reading.usage = checked
        if self._finished is None:
            if reading.finish_reasons:
                self._finished = FINISH
            elif as_str(as_dict(payload.get("promptFeedback")).get("blockReason")):
                self._finished = BLOCKED
            if self._finished is not None:
                frame |= self.finished(reading)
        return frame if malformed is None else Facts(frame, malformed=malformed)

    def finished(self, reading: Reading) -> Frame:
        """The SSE form ends with the finishing chunk; the array form overrides this."""
        reading.terminal_frame = self._finished
        return TERMINAL

    def _candidate(self, candidate: dict[str, Any], reading: Reading) -> bool:
        n = as_int(candidate.get("index")) or 0
        finish = candidate.get("finishReason")
        if isinstance(finish, (str, int)) and not isinstance(finish, bool) and finish != "":
            reading.finish_reason(n, cap(str(finish)))  # Vertex int enums: 1 = STOP
        parts = as_dict(candidate.get("content")).get("parts")
        if type(parts) is not list:
            return False
        output = False
        for part in parts:
            if type(part) is not dict:
                continue
            text = part.get("text")
            if type(text) is str and text:
                output = True
                if part.get("thought") is True:
                    reading.reasoning_chars += len(text)
                elif n == 0:
                    reading.add_text(text)
            elif "functionCall" in part:
                output = self._function_call(as_dict(part["functionCall"]), n, reading) or output
            elif not _OUTPUT_PARTS.isdisjoint(part):
                output = True
        return output

    def _function_call(self, call: dict[str, Any], choice: int, reading: Reading) -> bool:
        key = self._calls
        self._calls += 1
        name = as_str(call.get("name"))
        reading.tool_call(key, choice=choice, name=name, call_id=as_str(call.get("id")))
        args = call.get("args")
        if args is not None:
            arguments = orjson.dumps(args).decode()  # compact, key order kept
            reading.tool_arguments(key, arguments, choice=choice)
            return True
        return name is not None


class GeminiSSE(_GeminiChunks):
    """``?alt=sse``: one chunk per unnamed event, plus bare error objects between events."""

    __slots__ = ("_bare", "_bare_chars", "_depth")

    def __init__(self) -> None:
        super().__init__()
        self._bare: list[str] = []
        self._bare_chars = 0
        self._depth = 0

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        return self.chunk(load_object(message.data), index, reading)

    def note(self, item: object, index: int, reading: Reading) -> Verdict:
        """Collect ignored lines by brace balance, as genai-py does, and read the object they form."""
        if type(item) is not FieldIgnored:
            return NONE
        line = item.line
        if not self._bare and not line.lstrip().startswith("{"):
            return NONE  # stray unknown field, not the start of a bare object
        self._bare_chars += len(line)
        if self._bare_chars > MAX_BARE_ERROR_CHARS:
            self._bare.clear()
            self._bare_chars = self._depth = 0
            return _BARE_TOO_LARGE
        self._bare.append(line)
        self._depth += line.count("{") - line.count("}")
        if self._depth > 0:
            return NONE
        text = "\n".join(self._bare)
        self._bare.clear()
        self._bare_chars = self._depth = 0
        payload = load_object(text)
        if type(payload) is Facts:
            return payload
        if not payload.get("error"):
            return _BARE_NOT_AN_ERROR
        # Not an event: it sits after ``index`` events, which is the index it is reported at.
        return error_frame(index, *_error_fields(payload["error"]))


class GeminiJSONArray(_GeminiChunks):
    """Without ``alt=sse``: one chunk per array element; complete once ``]`` follows the finish."""

    __slots__ = ("_closed",)

    def __init__(self) -> None:
        super().__init__()
        self._closed = False

    def read(self, element: ElementReceived, index: int, reading: Reading) -> Verdict:
        return self.chunk(load_object(element.data), index, reading)

    def finished(self, reading: Reading) -> Frame:
        return self._terminal(reading)

    def note(self, item: object, index: int, reading: Reading) -> Frame:
        if type(item) is not ArrayClosed:
            return NONE
        self._closed = True
        return self._terminal(reading)

    def _terminal(self, reading: Reading) -> Frame:
        if not self._closed or self._finished is None or reading.terminal_frame is not None:
            return NONE
        reading.terminal_frame = ARRAY_END if self._finished == FINISH else BLOCKED + "+]"
        return TERMINAL
