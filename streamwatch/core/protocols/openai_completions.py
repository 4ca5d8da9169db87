"""OpenAI legacy completions streams (``/v1/completions``), also served by vLLM and llama.cpp.

Unnamed ``text_completion`` chunks whose ``choices[].text`` is the output, ended by ``[DONE]``;
usage in a last chunk when ``stream_options.include_usage`` was asked for; errors as for Chat
Completions (corpus ERROR_FRAMES.md §8).
"""

from __future__ import annotations

from streamwatch.core.limits import cap
from streamwatch.core.protocols.base import (
    DONE,
    USAGE_OUT_OF_RANGE,
    Facts,
    Frame,
    Reading,
    Verdict,
    as_int,
    as_str,
    error_fields,
    error_frame,
    load_object,
)
from streamwatch.core.protocols.openai_chat import usage_of
from streamwatch.core.sse import MessageDispatched


class OpenAICompletions:
    """Interpreter for legacy completion chunks; every choice counts, text length is choice 0's."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        data = message.data
        if data == DONE:
            reading.terminal_frame = DONE
            return Frame.TERMINAL
        chunk = load_object(data)
        if type(chunk) is Facts:
            return chunk
        error = chunk.get("error")
        if error or message.event == "error":
            return error_frame(index, *error_fields(error if error else chunk))
        if reading.model is None:
            reading.model = as_str(chunk.get("model"))
            reading.response_id = as_str(chunk.get("id"))
        frame = Frame.NONE
        choices = chunk.get("choices")
        if type(choices) is list:
            for choice in choices:
                if type(choice) is not dict:
                    continue
                n = as_int(choice.get("index")) or 0
                finish = choice.get("finish_reason")
                if finish and type(finish) is str:
                    reading.finish_reason(n, cap(finish))
                text = choice.get("text")
                if type(text) is str and text:
                    frame = Frame.OUTPUT
                    if n == 0:
                        reading.add_text(text)
        usage = chunk.get("usage")
        if type(usage) is dict:
            checked = usage_of(usage)
            if checked is None:
                return Facts(frame, malformed=USAGE_OUT_OF_RANGE)
            reading.usage = checked
        return frame
