"""Which framing decoder and which interpreter read each :class:`~streamwatch.core.events.Api`.

The analyzer is the same for every format: a decoder turns reads into frames (SSE messages, JSON
array elements, AWS event-stream messages, NDJSON lines), an interpreter turns frames into the
facts DESIGN.md defines (output, finish reasons, usage, terminal and error frames). This table is
the only place that pairs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Generic, Protocol, TypeVar

from streamwatch.core.api import Api
from streamwatch.core.eventstream import EventStreamDecoder, EventStreamMessage
from streamwatch.core.json_array import ElementReceived, JSONArrayDecoder
from streamwatch.core.ndjson import LineReceived, NDJSONDecoder
from streamwatch.core.protocols.anthropic import AnthropicMessages
from streamwatch.core.protocols.base import GenericSSE, Interpreter, Reading, Verdict
from streamwatch.core.protocols.bedrock import BedrockConverse, BedrockInvoke
from streamwatch.core.protocols.cohere import CohereV2
from streamwatch.core.protocols.gemini import GeminiJSONArray, GeminiSSE
from streamwatch.core.protocols.ollama import Ollama
from streamwatch.core.protocols.openai_chat import OpenAIChat
from streamwatch.core.protocols.openai_completions import OpenAICompletions
from streamwatch.core.protocols.openai_responses import OpenAIResponses
from streamwatch.core.sse import MessageDispatched, SSEDecoder


class Framing(StrEnum):
    """How a response body is cut into frames."""

    SSE = "sse"  # text/event-stream
    JSON_ARRAY = "json_array"  # application/json, one array written element by element
    AWS_EVENTSTREAM = "aws_eventstream"  # application/vnd.amazon.eventstream
    NDJSON = "ndjson"  # application/x-ndjson


class Decoder(Protocol):
    """Bytes in (any split), decoder items out; never raises, memory capped."""

    def feed(self, chunk: bytes) -> Sequence[object]: ...

    def close(self) -> Sequence[object]: ...


#: The frame type each framing's decoder yields; every other item it yields is a side fact.
FRAME_TYPE: Final[Mapping[Framing, type]] = {
    Framing.SSE: MessageDispatched,
    Framing.JSON_ARRAY: ElementReceived,
    Framing.AWS_EVENTSTREAM: EventStreamMessage,
    Framing.NDJSON: LineReceived,
}

#: The media type (``Content-Type`` without parameters) each framing arrives as.
MEDIA_TYPE: Final[Mapping[Framing, str]] = {
    Framing.SSE: "text/event-stream",
    Framing.JSON_ARRAY: "application/json",
    Framing.AWS_EVENTSTREAM: "application/vnd.amazon.eventstream",
    Framing.NDJSON: "application/x-ndjson",
}


InterpreterT = TypeVar("InterpreterT", bound=Interpreter[Any])


@dataclass(frozen=True, slots=True)
class Format(Generic[InterpreterT]):
    """One API over one framing: how to build a stream's decoder and its interpreter."""

    framing: Framing
    interpreter: Callable[[], InterpreterT]
    """A fresh interpreter per stream (some keep per-stream state, e.g. Bedrock's messageStop)."""
    note: Callable[[InterpreterT, object, int, Reading], Verdict] | None = None
    """The interpreter's reader of decoder items that are not frames (ignored SSE fields, the JSON
    array's closing bracket), called with the stream's interpreter and the number of frames before
    the item; None where the format has no such facts."""
    report_ignored_fields: bool = False
    """SSE only: hand lines WHATWG ignores to the interpreter (Gemini's bare error objects)."""

    def decoder(self, max_event_bytes: int) -> Decoder:
        """A fresh decoder for one stream; ``max_event_bytes`` caps one frame."""
        if self.framing is Framing.SSE:
            return SSEDecoder(
                max_event_bytes=max_event_bytes, report_ignored_fields=self.report_ignored_fields
            )
        if self.framing is Framing.JSON_ARRAY:
            return JSONArrayDecoder(max_event_bytes=max_event_bytes)
        if self.framing is Framing.AWS_EVENTSTREAM:
            return EventStreamDecoder(max_event_bytes=max_event_bytes)
        return NDJSONDecoder(max_event_bytes=max_event_bytes)


FORMATS: Final[Mapping[Api, Format[Any]]] = {
    Api.OPENAI_CHAT: Format(Framing.SSE, OpenAIChat),
    Api.OPENAI_RESPONSES: Format(Framing.SSE, OpenAIResponses),
    Api.ANTHROPIC_MESSAGES: Format(Framing.SSE, AnthropicMessages),
    Api.OPENAI_COMPLETIONS: Format(Framing.SSE, OpenAICompletions),
    Api.GEMINI: Format(Framing.SSE, GeminiSSE, note=GeminiSSE.note, report_ignored_fields=True),
    Api.GEMINI_JSON: Format(Framing.JSON_ARRAY, GeminiJSONArray, note=GeminiJSONArray.note),
    Api.BEDROCK_CONVERSE: Format(Framing.AWS_EVENTSTREAM, BedrockConverse),
    Api.BEDROCK_INVOKE: Format(Framing.AWS_EVENTSTREAM, BedrockInvoke),
    Api.OLLAMA_CHAT: Format(Framing.NDJSON, Ollama),
    Api.OLLAMA_GENERATE: Format(Framing.NDJSON, Ollama),
    Api.COHERE_V2: Format(Framing.SSE, CohereV2),
    Api.SSE: Format(Framing.SSE, GenericSSE),
}
