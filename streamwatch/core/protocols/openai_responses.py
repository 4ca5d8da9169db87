"""OpenAI Responses API streams (``/v1/responses``).

Named events whose ``event`` equals the payload ``type``, ended by one of ``response.completed``,
``response.incomplete`` or ``response.failed``. Error frames are ``error`` events (flat or with a
nested ``error`` object) and ``response.failed`` (see corpus ERROR_FRAMES.md §2). Only events we
interpret are parsed: the ``*.done`` events repeat the whole text and would double the JSON cost.
A ``data: [DONE]`` after the terminal event (LiteLLM sends one) is the OpenAI family's sentinel:
known, and neither output nor malformed.
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
from streamwatch.core.record import Usage
from streamwatch.core.sse import MessageDispatched

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TEXT = "response.output_text.delta"
_REFUSAL = "response.refusal.delta"
_REASONING = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_ARGUMENTS = "response.function_call_arguments.delta"
_ITEM_ADDED = "response.output_item.added"
_STARTED = frozenset({"response.created", "response.in_progress"})
_INTERPRETED = frozenset(
    {_TEXT, _REFUSAL, _ARGUMENTS, _ITEM_ADDED, "error", "message"}
    | _REASONING
    | _STARTED
    | TERMINAL_EVENTS
)


def _usage(usage: dict[str, Any]) -> Usage | None:
    output = as_dict(usage.get("output_tokens_details"))
    cached = as_dict(usage.get("input_tokens_details"))
    return read_usage(
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        reasoning_tokens=output.get("reasoning_tokens"),
        cached_input_tokens=cached.get("cached_tokens"),
        total_tokens=usage.get("total_tokens"),
    )


class OpenAIResponses:
    """Interpreter for Responses API events."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        if message.event not in _INTERPRETED or message.data == DONE:
            return NONE
        payload = load_object(message.data)
        if type(payload) is Facts:
            return payload
        kind = as_str(payload.get("type")) or message.event
        if kind == _TEXT:
            return self._delta(payload, reading.add_text)
        if kind in _REASONING:
            return self._delta(payload, lambda d: self._count_reasoning(reading, d))
        if kind == _REFUSAL:
            return self._delta(payload, lambda d: self._count_refusal(reading, d))
        if kind == _ARGUMENTS:
            key = as_str(payload.get("item_id")) or str(as_int(payload.get("output_index")))
            return self._delta(payload, lambda d: reading.tool_arguments(key, d))
        if kind == _ITEM_ADDED:
            return self._item_added(payload, reading)
        if kind == "error":
            nested = payload.get("error")
            if nested:
                error_type, text = error_fields(nested)
            else:
                error_type = as_str(payload.get("code")) or "error"
                text = as_str(payload.get("message")) or ""
            return error_frame(index, error_type, text)
        if kind in _STARTED or kind in TERMINAL_EVENTS:
            return self._response(kind, as_dict(payload.get("response")), index, reading)
        return NONE

    @staticmethod
    def _delta(payload: dict[str, Any], sink: Any) -> Frame:
        delta = payload.get("delta")
        if isinstance(delta, str) and delta:
            sink(delta)
            return OUTPUT
        return NONE

    @staticmethod
    def _count_reasoning(reading: Reading, delta: str) -> None:
        reading.reasoning_chars += len(delta)

    @staticmethod
    def _count_refusal(reading: Reading, delta: str) -> None:
        reading.refusal_chars += len(delta)

    @staticmethod
    def _item_added(payload: dict[str, Any], reading: Reading) -> Frame:
        item = as_dict(payload.get("item"))
        if item.get("type") != "function_call":
            return NONE
        key = as_str(item.get("id")) or str(as_int(payload.get("output_index")))
        name = as_str(item.get("name"))
        reading.tool_call(key, name=name, call_id=as_str(item.get("call_id")))
        arguments = item.get("arguments")
        if isinstance(arguments, str) and arguments:
            reading.tool_arguments(key, arguments)
        return OUTPUT if name else NONE

    @staticmethod
    def _response(kind: str, response: dict[str, Any], index: int, reading: Reading) -> Verdict:
        reading.model = as_str(response.get("model")) or reading.model
        reading.response_id = as_str(response.get("id")) or reading.response_id
        if kind not in TERMINAL_EVENTS:
            return NONE
        reading.terminal_frame = kind
        frame = TERMINAL
        malformed: str | None = None
        usage = response.get("usage")
        if isinstance(usage, dict):
            checked = _usage(usage)
            if checked is None:
                malformed = USAGE_OUT_OF_RANGE
            else:
                reading.usage = checked
        status = as_str(response.get("status")) or kind.removeprefix("response.")
        reason = as_str(as_dict(response.get("incomplete_details")).get("reason"))
        reading.finish_reason(0, cap(f"{status}:{reason}") if reason else status)
        if kind != "response.failed":
            return frame if malformed is None else Facts(frame, malformed=malformed)
        error_type, text = error_fields(response.get("error"))
        error_type = error_type if response.get("error") else "failed"
        return error_frame(index, error_type, text, frame, malformed=malformed)
