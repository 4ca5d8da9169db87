"""OpenAI legacy completions streams (``/v1/completions``), also served by vLLM and llama.cpp.

Unnamed ``text_completion`` chunks whose ``choices[].text`` is the output, ended by ``[DONE]``;
usage in a last chunk when ``stream_options.include_usage`` was asked for; errors as for Chat
Completions (corpus ERROR_FRAMES.md §8).
"""

from __future__ import annotations

from streamwatch.core.limits import cap
from streamwatch.core.protocols.base import (
    NONE,
    OUTPUT,
    Reading,
    Verdict,
    as_int,
)
from streamwatch.core.protocols.openai_chat import close_chunk, open_chunk
from streamwatch.core.sse import MessageDispatched


class OpenAICompletions:
    """Interpreter for legacy completion chunks; every choice counts, text length is choice 0's."""

    def read(self, message: MessageDispatched, index: int, reading: Reading) -> Verdict:
        chunk = open_chunk(message, index, reading)
        if not isinstance(chunk, dict):
            return chunk
        frame = NONE
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
                    frame = OUTPUT
                    if n == 0:
                        reading.add_text(text)
        return close_chunk(frame, chunk.get("usage"), reading)
