"""Anthropic Messages streams (``/v1/messages``).

``message_start`` (model, id, input usage; its output count is a placeholder), content blocks
(``text_delta``, ``thinking_delta``, ``input_json_delta``), ``message_delta`` (``stop_reason`` and
cumulative usage), ``message_stop``.
Errors are ``event: error``, or relays that drop the event line and send only a payload of type
``error`` (see corpus ERROR_FRAMES.md §3). ``ping`` events are not parsed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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
    error_fields,
    error_frame,
    load_object,
    read_usage,
)
from streamwatch.core.record import Usage
from streamwatch.core.sse import MessageDispatched

_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_BAD_USAGE = Facts(malformed=USAGE_OUT_OF_RANGE)


def _merge_usage(
    current: Usage | None, usage: dict[str, Any], reading: Reading, *, final: bool
) -> Verdict:
    """Merge a usage object into the reading, field by field (``message_delta`` counts are cumulative).

    ``message_start`` carries an output count that is a placeholder (1 from Anthropic, 0 behind
    LiteLLM), not a report: only the final ``message_delta`` reports output, so a stream cut before
    it has its output estimated from events and flagged. Out-of-range counts: ignored, malformed.
    """
    thinking = as_dict(usage.get("output_tokens_details")).get("thinking_tokens")
    counts = {
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens") if final else None,
        "cached_input_tokens": usage.get("cache_read_input_tokens"),
        "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
        "reasoning_tokens": thinking,
    }
    if read_usage(**counts) is None:  # a count out of range: none of them is believed
        return _BAD_USAGE
    reading.usage = replace(
        current or Usage(), **{k: v for k, v in counts.items() if v is not None}
    )
    return NONE


class AnthropicMessages:
    """Interpreter for Anthropic Messages events."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        if message.event == "ping":
            return NONE
        payload = load_object(message.data)
        if type(payload) is Facts:
            return payload
        kind = as_str(payload.get("type")) or message.event
        if kind == "content_block_delta":
            return self._delta(payload, reading)
        if kind == "content_block_start":
            block = as_dict(payload.get("content_block"))
            if block.get("type") in _TOOL_BLOCKS:
                name = as_str(block.get("name"))
                key = as_int(payload.get("index")) or 0
                reading.tool_call(key, name=name, call_id=as_str(block.get("id")))
                return OUTPUT if name else NONE
            return NONE
        if kind == "message_delta":
            stop = as_str(as_dict(payload.get("delta")).get("stop_reason"))
            if stop:
                reading.finish_reason(0, stop)
            usage = payload.get("usage")
            if isinstance(usage, dict):
                return _merge_usage(reading.usage, usage, reading, final=True)
            return NONE
        if kind == "message_start":
            msg = as_dict(payload.get("message"))
            reading.model = as_str(msg.get("model")) or reading.model
            reading.response_id = as_str(msg.get("id")) or reading.response_id
            usage = msg.get("usage")
            if isinstance(usage, dict):
                return _merge_usage(reading.usage, usage, reading, final=False)
            return NONE
        if kind == "message_stop":
            reading.terminal_frame = "message_stop"
            return TERMINAL
        if kind == "error" or message.event == "error":
            error_type, text = error_fields(payload.get("error"))
            return error_frame(index, error_type, text)
        return NONE

    @staticmethod
    def _delta(payload: dict[str, Any], reading: Reading) -> Frame:
        delta = as_dict(payload.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if isinstance(text, str) and text:
                reading.add_text(text)
                return OUTPUT
        elif kind == "thinking_delta":
            thinking = delta.get("thinking")
            if isinstance(thinking, str) and thinking:
                reading.reasoning_chars += len(thinking)
                return OUTPUT
        elif kind == "input_json_delta":
            fragment = delta.get("partial_json")
            if isinstance(fragment, str) and fragment:
                reading.tool_arguments(as_int(payload.get("index")) or 0, fragment)
                return OUTPUT
        return NONE
