"""Ollama streams (``/api/chat`` and ``/api/generate``): one JSON object per NDJSON line.

Output is ``message.content`` (chat) or ``response`` (generate), reasoning is ``thinking`` (in
``message`` for chat, top level for generate), tool calls are whole objects in
``message.tool_calls``. The last line has ``done: true`` with ``done_reason`` (``stop``, ``length``;
older servers omit it), ``prompt_eval_count``, ``eval_count`` and Ollama's own durations. An error
after the 200 is one more line ``{"error": "…"}`` (a string) and the stream ends (corpus
ERROR_FRAMES.md §6); its type is ``error``, Ollama gives none.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamwatch.core.ndjson import LineReceived
from streamwatch.core.protocols.base import (
    NONE,
    OUTPUT,
    TERMINAL,
    USAGE_OUT_OF_RANGE,
    Facts,
    Reading,
    Verdict,
    as_dict,
    as_str,
    error_fields,
    error_frame,
    load_object,
    read_usage,
)

DONE = "done:true"
_TIMINGS = (
    ("ollama_total", "total_duration"),
    ("ollama_load", "load_duration"),
    ("ollama_prompt_eval", "prompt_eval_duration"),
    ("ollama_eval", "eval_duration"),
)


class Ollama:
    """Interpreter for both Ollama endpoints (they differ only in where the text is). Per stream."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls = 0  # tool calls arrive whole: keyed by arrival

    def read(self, line: LineReceived, index: int, reading: Reading) -> Verdict:
        payload = load_object(line.data)
        if type(payload) is Facts:
            return payload
        error = payload.get("error")
        if error:
            return error_frame(index, *error_fields(error))
        if reading.model is None:
            reading.model = as_str(payload.get("model"))
        frame = NONE
        message = payload.get("message")
        body = message if type(message) is dict else payload
        text = body.get("content") if body is message else body.get("response")
        if type(text) is str and text:
            reading.add_text(text)
            frame = OUTPUT
        thinking = body.get("thinking")
        if type(thinking) is str and thinking:
            reading.reasoning_chars += len(thinking)
            frame = OUTPUT
        calls = body.get("tool_calls")
        if type(calls) is list:
            for call in calls:
                if type(call) is dict and self._tool_call(call, reading):
                    frame = OUTPUT
        if payload.get("done") is True:
            if self._done(payload, reading):
                return frame | TERMINAL
            return Facts(frame | TERMINAL, malformed=USAGE_OUT_OF_RANGE)
        return frame

    def _tool_call(self, call: dict[str, Any], reading: Reading) -> bool:
        key = self._calls
        self._calls += 1
        function = as_dict(call.get("function"))
        name = as_str(function.get("name"))
        reading.tool_call(key, name=name, call_id=as_str(call.get("id")))
        arguments = function.get("arguments")
        if arguments is not None:
            text = arguments if type(arguments) is str else orjson.dumps(arguments).decode()
            reading.tool_arguments(key, text)
            return True
        return name is not None

    @staticmethod
    def _done(payload: dict[str, Any], reading: Reading) -> bool:
        """The final line: finish reason, terminal marker and usage; False if the usage is not
        believed (out of range)."""
        reason = as_str(payload.get("done_reason"))
        if reason:
            reading.finish_reason(0, reason)
        reading.terminal_frame = DONE
        for name, key in _TIMINGS:
            reading.timing(name, payload.get(key), 1)  # Ollama reports nanoseconds
        prompt, output = payload.get("prompt_eval_count"), payload.get("eval_count")
        if prompt is None and output is None:
            return True
        usage = read_usage(input_tokens=prompt, output_tokens=output)
        if usage is None:
            return False
        reading.usage = usage
        return True
