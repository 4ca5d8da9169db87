"""AWS Bedrock streams: ``ConverseStream`` and ``InvokeModelWithResponseStream``.

Both arrive as AWS event-stream messages (:mod:`streamwatch.core.eventstream`). Converse messages
are named by ``:event-type``: ``contentBlockDelta`` carries text, ``reasoningContent`` (text, or a
redacted blob: output without text) or tool input; ``contentBlockStart`` names a tool; ``messageStop``
carries ``stopReason`` and the following ``metadata`` usage, ``latencyMs`` and any guardrail trace:
the stream is complete only with both. Invoke messages are all ``chunk`` events whose payload is
``{"bytes": base64(model-native JSON)}``, read by dialect: Anthropic Messages events, Nova objects
keyed by the Converse event name, or Titan text objects (``completionReason``, or a guardrail action).
A ``:message-type`` of ``exception`` (``:exception-type`` names it, the payload has ``message``) or
``error`` (``:error-code``, ``:error-message``) after the 200 is an error frame (corpus
ERROR_FRAMES.md §5). Bedrock pads payloads with a meaningless ``p`` field.
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

from streamwatch.core.eventstream import EventStreamMessage
from streamwatch.core.limits import cap
from streamwatch.core.protocols.anthropic import AnthropicMessages
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
from streamwatch.core.sse import MessageDispatched

STOP_THEN_METADATA = "messageStop+metadata"
TITAN_END = "completionReason"
GUARDRAIL = "amazon-bedrock-guardrailAction"
INVOCATION_METRICS = "amazon-bedrock-invocationMetrics"
_NS_PER_MS = 1_000_000
_BAD_CHUNK_BYTES = Facts(malformed="chunk_bytes")
_CONVERSE_EVENTS = frozenset(
    {
        "messageStart",
        "contentBlockStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    }
)


def _usage(usage: dict[str, Any]) -> Usage | None:
    """Converse ``metadata.usage`` (Nova in invoke spells the cache counts ``...TokenCount``)."""

    def first(*keys: str) -> object:
        return next((v for k in keys if (v := usage.get(k)) is not None), None)

    return read_usage(
        input_tokens=usage.get("inputTokens"),
        output_tokens=usage.get("outputTokens"),
        total_tokens=usage.get("totalTokens"),
        cached_input_tokens=first("cacheReadInputTokens", "cacheReadInputTokenCount"),
        cache_creation_input_tokens=first("cacheWriteInputTokens", "cacheWriteInputTokenCount"),
    )


def read_failure(message: EventStreamMessage, index: int) -> Facts:
    """An ``exception`` or ``error`` message: the error frame it reports."""
    headers = message.headers
    if message.message_type == "exception":
        error_type = headers.get(":exception-type") or "exception"
        try:
            text = as_str(as_dict(orjson.loads(message.payload)).get("message")) or ""
        except orjson.JSONDecodeError:
            text = ""
    else:
        error_type = headers.get(":error-code") or "error"
        text = headers.get(":error-message", "")
    return error_frame(index, cap(error_type), cap(text))


class _ConverseEvents:
    """Converse-shaped events (ConverseStream, and Nova bodies inside invoke). One per stream."""

    __slots__ = ("_stopped",)

    def __init__(self) -> None:
        self._stopped = False  # messageStop seen; complete at the metadata that follows

    def event(self, kind: str, body: dict[str, Any], reading: Reading) -> Verdict:
        if kind == "contentBlockDelta":
            return self._delta(as_dict(body.get("delta")), body, reading)
        if kind == "contentBlockStart":
            tool = as_dict(as_dict(body.get("start")).get("toolUse"))
            if not tool:
                return NONE
            name = as_str(tool.get("name"))
            key = as_int(body.get("contentBlockIndex")) or 0
            reading.tool_call(key, name=name, call_id=as_str(tool.get("toolUseId")))
            return OUTPUT if name else NONE
        if kind == "messageStop":
            reason = as_str(body.get("stopReason"))
            if reason:
                reading.finish_reason(0, reason)
            self._stopped = True
            return NONE
        if kind == "metadata":
            frame = NONE
            malformed: str | None = None
            latency = as_dict(body.get("metrics")).get("latencyMs")
            reading.timing("bedrock_latency", latency, _NS_PER_MS)
            usage = body.get("usage")
            if type(usage) is dict:
                checked = _usage(usage)
                if checked is None:
                    malformed = USAGE_OUT_OF_RANGE
                else:
                    reading.usage = checked
            if self._stopped and reading.terminal_frame is None:
                reading.terminal_frame = STOP_THEN_METADATA
                frame = TERMINAL
            return frame if malformed is None else Facts(frame, malformed=malformed)
        return NONE

    @staticmethod
    def _delta(delta: dict[str, Any], body: dict[str, Any], reading: Reading) -> Frame:
        text = delta.get("text")
        if type(text) is str:
            if not text:
                return NONE
            reading.add_text(text)
            return OUTPUT
        reasoning = delta.get("reasoningContent")
        if type(reasoning) is dict:
            thought = reasoning.get("text")
            if type(thought) is str and thought:
                reading.reasoning_chars += len(thought)
                return OUTPUT
            return OUTPUT if reasoning.get("redactedContent") else NONE
        tool = delta.get("toolUse")
        if type(tool) is dict:
            fragment = tool.get("input")
            if type(fragment) is str and fragment:
                reading.tool_arguments(as_int(body.get("contentBlockIndex")) or 0, fragment)
                return OUTPUT
        return NONE


class BedrockConverse(_ConverseEvents):
    """``/model/{id}/converse-stream``."""

    __slots__ = ()

    def read(self, message: EventStreamMessage, index: int, reading: Reading) -> Verdict:
        if message.message_type != "event":
            return read_failure(message, index)
        kind = message.headers.get(":event-type", "")
        if kind not in _CONVERSE_EVENTS:
            return NONE
        body = load_object(message.payload)
        if type(body) is Facts:
            return body
        return self.event(kind, body, reading)


class BedrockInvoke(_ConverseEvents):
    """``/model/{id}/invoke-with-response-stream``: model-native bodies inside ``chunk`` events."""

    __slots__ = ("_anthropic",)

    def __init__(self) -> None:
        super().__init__()
        self._anthropic = AnthropicMessages()

    def read(self, message: EventStreamMessage, index: int, reading: Reading) -> Verdict:
        if message.message_type != "event":
            return read_failure(message, index)
        if message.headers.get(":event-type") != "chunk":
            return NONE
        chunk = load_object(message.payload)
        if type(chunk) is Facts:
            return chunk
        encoded = chunk.get("bytes")
        try:
            raw = binascii.a2b_base64(encoded, strict_mode=True) if type(encoded) is str else b""
        except ValueError:  # binascii.Error, or non-ASCII text
            raw = b""
        if not raw:
            return _BAD_CHUNK_BYTES
        body = load_object(raw)
        if type(body) is Facts:
            return body
        metrics = body.get(INVOCATION_METRICS)
        if type(metrics) is dict:
            latency, first_byte = metrics.get("invocationLatency"), metrics.get("firstByteLatency")
            reading.timing("bedrock_invocation_latency", latency, _NS_PER_MS)
            reading.timing("bedrock_first_byte_latency", first_byte, _NS_PER_MS)
        kind = body.get("type")
        if type(kind) is str:  # Anthropic Messages event
            event = MessageDispatched(kind, raw.decode("utf-8", "replace"), None, None)
            return self._anthropic.read(event, index, reading)
        for key, value in body.items():  # Nova: {"<converse event>": {...}}
            if key in _CONVERSE_EVENTS and type(value) is dict:
                return self.event(key, value, reading)
        return self._titan(body, reading)

    @staticmethod
    def _titan(body: dict[str, Any], reading: Reading) -> Verdict:
        frame = NONE
        malformed: str | None = None
        text = body.get("outputText")
        if type(text) is str and text:
            reading.add_text(text)
            frame = OUTPUT
        inputs, outputs = body.get("inputTextTokenCount"), body.get("totalOutputTextTokenCount")
        if inputs is not None or outputs is not None:
            usage = read_usage(input_tokens=inputs, output_tokens=outputs)
            if usage is None:
                malformed = USAGE_OUT_OF_RANGE
            else:
                reading.usage = usage
        reason = as_str(body.get(TITAN_END))
        if reason:
            reading.finish_reason(0, reason)
        marker = TITAN_END if reason else (GUARDRAIL if as_str(body.get(GUARDRAIL)) else None)
        if marker is not None and reading.terminal_frame is None:
            reading.terminal_frame = marker
            frame |= TERMINAL
        return frame if malformed is None else Facts(frame, malformed=malformed)
