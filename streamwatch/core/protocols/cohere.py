"""Cohere v2 chat streams (``/v2/chat``): typed SSE events ended by ``message-end`` then ``[DONE]``.

``content-delta`` carries text (or ``thinking`` for reasoning models), ``tool-plan-delta`` the
streamed tool plan and ``tool-call-start``/``tool-call-delta`` tool calls: all output.
``message-end`` carries ``finish_reason`` and usage (``tokens``; ``billed_units`` are billing, not
the count), and is also the error channel: ``delta.error`` with ``finish_reason`` ``ERROR`` or
``TIMEOUT`` (corpus ERROR_FRAMES.md §7). The finish reason is then the error type.
"""

from __future__ import annotations

from typing import Any

from streamwatch.core.limits import cap
from streamwatch.core.protocols.base import (
    DONE,
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
    error_fields,
    error_frame,
    load_object,
    read_usage,
)
from streamwatch.core.sse import MessageDispatched

MESSAGE_END = "message-end"
_INTERPRETED = frozenset(
    {
        "content-delta",
        "tool-plan-delta",
        "tool-call-start",
        "tool-call-delta",
        "message-start",
        MESSAGE_END,
        "error",
    }
)


def _message(payload: dict[str, Any]) -> dict[str, Any]:
    return as_dict(as_dict(payload.get("delta")).get("message"))


class CohereV2:
    """Interpreter for Cohere v2 chat events."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        event = message.event
        if event not in _INTERPRETED:
            if message.data == DONE:
                if reading.terminal_frame == MESSAGE_END:
                    reading.terminal_frame = MESSAGE_END + "+" + DONE
                return NONE
            if event != "message":
                return NONE
        payload = load_object(message.data)
        if type(payload) is Facts:
            return payload
        kind = as_str(payload.get("type")) or event
        if kind == "content-delta":
            content = as_dict(_message(payload).get("content"))
            text = content.get("text")
            if type(text) is str and text:
                reading.add_text(text)
                return OUTPUT
            thinking = content.get("thinking")
            if type(thinking) is str and thinking:
                reading.reasoning_chars += len(thinking)
                return OUTPUT
            return NONE
        if kind == "tool-plan-delta":
            plan = _message(payload).get("tool_plan")
            return OUTPUT if type(plan) is str and plan else NONE
        if kind in ("tool-call-start", "tool-call-delta"):
            return self._tool_call(payload, reading)
        if kind == "message-start":
            reading.response_id = as_str(payload.get("id")) or reading.response_id
            return NONE
        if kind == MESSAGE_END:
            return self._end(as_dict(payload.get("delta")), index, reading)
        if kind == "error" or payload.get("error"):
            return error_frame(index, *error_fields(payload.get("error") or payload))
        return NONE

    @staticmethod
    def _tool_call(payload: dict[str, Any], reading: Reading) -> Frame:
        key = as_int(payload.get("index")) or 0
        call = as_dict(_message(payload).get("tool_calls"))
        function = as_dict(call.get("function"))
        name = as_str(function.get("name"))
        reading.tool_call(key, name=name, call_id=as_str(call.get("id")))
        arguments = function.get("arguments")
        if type(arguments) is str and arguments:
            reading.tool_arguments(key, arguments)
            return OUTPUT
        return OUTPUT if name else NONE

    @staticmethod
    def _end(delta: dict[str, Any], index: int, reading: Reading) -> Verdict:
        finish = as_str(delta.get("finish_reason"))
        if finish:
            reading.finish_reason(0, finish)
        frame = TERMINAL
        malformed: str | None = None
        tokens = as_dict(as_dict(delta.get("usage")).get("tokens"))
        if tokens:
            usage = read_usage(
                input_tokens=tokens.get("input_tokens"),
                output_tokens=tokens.get("output_tokens"),
            )
            if usage is None:
                malformed = USAGE_OUT_OF_RANGE
            else:
                reading.usage = usage
        reading.terminal_frame = MESSAGE_END
        error = delta.get("error")
        if error:
            text = cap(error if type(error) is str else str(error))
            return error_frame(index, finish or "error", text, frame, malformed=malformed)
        return frame if malformed is None else Facts(frame, malformed=malformed)
