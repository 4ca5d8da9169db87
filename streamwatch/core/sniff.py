"""Which interpreter reads a body when nothing else says: a response body without its request.

The proxy always knows the request path and the response content type (``select_api``). A body
pasted into a ticket does not, so ``streamwatch analyze`` guesses from the first bytes: first the
framing (an AWS event-stream prelude whose CRC holds, a JSON array, NDJSON lines, else SSE), then
the API by the frame names each API alone uses. A body that matches none is timed as generic SSE.
"""

from __future__ import annotations

import zlib

import orjson

from streamwatch.core.api import Api

SNIFF_BYTES = 64 * 1024  # enough for the first few frames of any API; bounds the scan
_PRELUDE = 12  # AWS event stream: total length, headers length, prelude CRC32 (4 bytes each)
_MIN_MESSAGE = 16  # a prelude and a message CRC32, no headers, no payload

# Each marker appears only in its own API's frame names; the earliest one in the body wins, so
# generated text quoting another API's frame name later in the stream cannot flip the verdict.
_SSE_MARKERS: tuple[tuple[bytes, Api], ...] = (
    (b"message_start", Api.ANTHROPIC_MESSAGES),
    (b"content_block_delta", Api.ANTHROPIC_MESSAGES),
    (b'"type": "error", "error"', Api.ANTHROPIC_MESSAGES),  # an error frame alone (overloaded)
    (b'"type":"error","error"', Api.ANTHROPIC_MESSAGES),
    (b'"response.created"', Api.OPENAI_RESPONSES),
    (b'"response.output_text.delta"', Api.OPENAI_RESPONSES),
    (b"response.in_progress", Api.OPENAI_RESPONSES),
    (b"chat.completion.chunk", Api.OPENAI_CHAT),
    (b'"text_completion"', Api.OPENAI_COMPLETIONS),
    (b'"choices"', Api.OPENAI_CHAT),
    (b"message-start", Api.COHERE_V2),
    (b"content-delta", Api.COHERE_V2),
    (b'"candidates"', Api.GEMINI),
    (b'"usageMetadata"', Api.GEMINI),
    (b'"promptFeedback"', Api.GEMINI),  # a prompt blocked before any candidate
)


def _is_eventstream(window: bytes) -> bool:
    """An AWS event-stream message starts here: lengths that fit and a prelude CRC32 that holds."""
    if len(window) < _MIN_MESSAGE:
        return False
    total = int.from_bytes(window[0:4], "big")
    headers = int.from_bytes(window[4:8], "big")
    crc = int.from_bytes(window[8:12], "big")
    return (
        total >= _MIN_MESSAGE
        and headers <= total - _MIN_MESSAGE
        and (zlib.crc32(window[:8]) == crc)
    )


def _ndjson_api(window: bytes) -> Api | None:
    """Ollama's NDJSON: the first line is a JSON object with its ``message`` or ``response``."""
    first = window.partition(b"\n")[0]
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if "response" in obj:
        return Api.OLLAMA_GENERATE
    if "message" in obj or "done" in obj or isinstance(obj.get("error"), str):
        return Api.OLLAMA_CHAT
    return None


def sniff_api(head: bytes) -> Api:
    """The API whose frames ``head`` (the start of a body) carries; :attr:`Api.SSE` if none."""
    window = head[:SNIFF_BYTES]
    if _is_eventstream(window):
        # Invoke wraps the model's own JSON in ``chunk`` events; Converse names its events.
        return Api.BEDROCK_INVOKE if b"\x05chunk" in window[:512] else Api.BEDROCK_CONVERSE
    stripped = window.lstrip()
    if stripped.startswith(b"["):
        return Api.GEMINI_JSON
    if stripped.startswith(b"{"):
        api = _ndjson_api(stripped)
        if api is not None:
            return api
    found = [(at, api) for marker, api in _SSE_MARKERS if (at := window.find(marker)) >= 0]
    return min(found)[1] if found else Api.SSE
