"""OpenAI Chat Completions streams (``/v1/chat/completions``) and OpenAI-compatible vendors.

Unnamed events carrying ``chat.completion.chunk`` objects, ended by ``data: [DONE]``. Usage comes
in a last chunk with empty ``choices`` when the client asked for ``stream_options.include_usage``
(Groq puts it under ``x_groq.usage``). An error frame is a payload with a top-level ``error`` key,
or an event named ``error`` (see corpus ERROR_FRAMES.md §1).
"""

from __future__ import annotations

from typing import Any

from streamwatch.core.protocols.base import (
    Frame,
    Reading,
    as_dict,
    as_int,
    as_str,
    error_fields,
    load_object,
)
from streamwatch.core.record import Usage
from streamwatch.core.sse import MessageDispatched

DONE = "[DONE]"


def _usage(usage: dict[str, Any]) -> Usage:
    completion = as_dict(usage.get("completion_tokens_details"))
    prompt = as_dict(usage.get("prompt_tokens_details"))
    return Usage(
        input_tokens=as_int(usage.get("prompt_tokens")),
        output_tokens=as_int(usage.get("completion_tokens")),
        reasoning_tokens=as_int(completion.get("reasoning_tokens")),
        cached_input_tokens=as_int(prompt.get("cached_tokens")),
        total_tokens=as_int(usage.get("total_tokens")),
    )


class OpenAIChat:
    """Interpreter for Chat Completions chunks; every choice counts, text length is choice 0's."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Frame:
        data = message.data
        if data == DONE:
            reading.terminal_frame = DONE
            return Frame.TERMINAL
        chunk = load_object(data, reading)
        if chunk is None:
            return Frame.MALFORMED
        error = chunk.get("error")
        if error or message.event == "error":
            error_type, text = error_fields(error if error else chunk)
            reading.error(index, error_type, text)
            return Frame.ERROR
        if reading.model is None:
            reading.model = as_str(chunk.get("model"))
            reading.response_id = as_str(chunk.get("id"))
        frame = Frame.NONE
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and self._read_choice(choice, reading):
                    frame = Frame.OUTPUT
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            usage = as_dict(chunk.get("x_groq")).get("usage")
        if isinstance(usage, dict):
            reading.usage = _usage(usage)
        return frame

    def _read_choice(self, choice: dict[str, Any], reading: Reading) -> bool:
        """Record one choice's delta and finish reason; True if the delta carried output."""
        n = as_int(choice.get("index")) or 0
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            reading.finish_reasons[n] = finish
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        output = False
        content = delta.get("content")
        if isinstance(content, str) and content:
            output = True
            if n == 0:
                reading.add_text(content)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            output = True
            reading.refusal_chars += len(refusal)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            output = True
            reading.reasoning_chars += len(reasoning)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, dict) and self._read_tool_call(call, n, reading):
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
