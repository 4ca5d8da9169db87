"""OpenAI Chat Completions streams (``/v1/chat/completions``) and OpenAI-compatible vendors.

Unnamed events carrying ``chat.completion.chunk`` objects, ended by ``data: [DONE]``. Usage comes
in a last chunk with empty ``choices`` when the client asked for ``stream_options.include_usage``
(Groq puts it under ``x_groq.usage``). An error frame is a payload with a top-level ``error`` key,
or an event named ``error`` (see corpus ERROR_FRAMES.md §1).
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

_REASONING_KEYS = frozenset({"reasoning_content", "reasoning"})  # DeepSeek/vLLM and OpenRouter


def usage_of(usage: dict[str, Any]) -> Usage | None:
    """Chat Completions (and legacy completions) usage, range-checked (None: not believed)."""
    completion = as_dict(usage.get("completion_tokens_details"))
    prompt = as_dict(usage.get("prompt_tokens_details"))
    return read_usage(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        reasoning_tokens=completion.get("reasoning_tokens"),
        cached_input_tokens=prompt.get("cached_tokens"),
        total_tokens=usage.get("total_tokens"),
    )


def open_chunk(
    message: MessageDispatched, index: int, reading: Reading
) -> Verdict | dict[str, Any]:
    """The envelope every OpenAI-family chunk shares: ``[DONE]``, JSON, an error frame, the model
    and id. Returns the chunk to read further, or the verdict when the envelope already decides."""
    data = message.data
    if data == DONE:
        reading.terminal_frame = DONE
        return TERMINAL
    chunk = load_object(data)
    if type(chunk) is Facts:
        return chunk
    error = chunk.get("error")
    if error or message.event == "error":
        error_type, text = error_fields(error if error else chunk)
        return error_frame(index, error_type, text)
    if reading.model is None:
        reading.model = as_str(chunk.get("model"))
        reading.response_id = as_str(chunk.get("id"))
    return chunk


def close_chunk(frame: Frame, usage: object, reading: Reading) -> Verdict:
    """A chunk's usage, if it carries one, range-checked: out of range is malformed, not believed."""
    if type(usage) is dict:
        checked = usage_of(usage)
        if checked is None:
            return Facts(frame, malformed=USAGE_OUT_OF_RANGE)
        reading.usage = checked
    return frame


class OpenAIChat:
    """Interpreter for Chat Completions chunks; every choice counts, text length is choice 0's."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        chunk = open_chunk(message, index, reading)
        if not isinstance(chunk, dict):
            return chunk
        frame = NONE
        choices = chunk.get("choices")
        if type(choices) is list:
            for choice in choices:
                if type(choice) is dict and self._read_choice(choice, reading):
                    frame = OUTPUT
        usage = chunk.get("usage")
        if usage is None and "x_groq" in chunk:
            usage = as_dict(chunk["x_groq"]).get("usage")
        return close_chunk(frame, usage, reading)

    def _read_choice(self, choice: dict[str, Any], reading: Reading) -> bool:
        """Record one choice's delta and finish reason; True if the delta carried output."""
        finish = choice.get("finish_reason")
        n = choice.get("index", 0)
        if type(n) is not int:
            n = 0
        if finish and type(finish) is str:
            reading.finish_reason(n, cap(finish))
        delta = choice.get("delta")
        if type(delta) is not dict:
            return False
        output = False
        for key, value in delta.items():  # usually one key: iterate instead of probing five
            if not value:
                continue
            if key == "content":
                if type(value) is str:
                    output = True
                    if n == 0:
                        reading.add_text(value)
            elif key == "refusal":
                if type(value) is str:
                    output = True
                    reading.refusal_chars += len(value)
            elif key in _REASONING_KEYS:
                if type(value) is str:
                    output = True
                    reading.reasoning_chars += len(value)
            elif key == "tool_calls" and type(value) is list:
                for call in value:
                    if type(call) is dict and self._read_tool_call(call, n, reading):
                        output = True
        return output

    def _read_tool_call(self, call: dict[str, Any], choice: int, reading: Reading) -> bool:
        key = as_int(call.get("index")) or 0
        function = as_dict(call.get("function"))
        name = as_str(function.get("name"))
        reading.tool_call(key, choice=choice, name=name, call_id=as_str(call.get("id")))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            reading.tool_arguments(key, arguments, choice=choice)
            return True
        return name is not None
