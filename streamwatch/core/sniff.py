"""Which interpreter reads a body when nothing else says: a response body without its request.

The proxy always knows the request path and the response content type (``select_api``). A body
pasted into a ticket does not, so ``streamwatch analyze`` guesses from the first bytes, by the
frame names each API alone uses. A body that matches none is timed as generic SSE.
"""

from __future__ import annotations

from streamwatch.core.api import Api

SNIFF_BYTES = 64 * 1024  # enough for the first few frames of any API; bounds the scan

# Each marker appears only in its own API's frame names; the earliest one in the body wins, so
# generated text quoting another API's frame name later in the stream cannot flip the verdict.
_MARKERS: tuple[tuple[bytes, Api], ...] = (
    (b"message_start", Api.ANTHROPIC_MESSAGES),
    (b"content_block_delta", Api.ANTHROPIC_MESSAGES),
    (b'"type": "error", "error"', Api.ANTHROPIC_MESSAGES),  # an error frame alone (overloaded)
    (b'"type":"error","error"', Api.ANTHROPIC_MESSAGES),
    (b'"response.created"', Api.OPENAI_RESPONSES),
    (b'"response.output_text.delta"', Api.OPENAI_RESPONSES),
    (b"response.in_progress", Api.OPENAI_RESPONSES),
    (b"chat.completion.chunk", Api.OPENAI_CHAT),
    (b'"choices"', Api.OPENAI_CHAT),
)


def sniff_api(head: bytes) -> Api:
    """The API whose frames ``head`` (the start of a body) carries; :attr:`Api.SSE` if none."""
    window = head[:SNIFF_BYTES]
    found = [(at, api) for marker, api in _MARKERS if (at := window.find(marker)) >= 0]
    return min(found)[1] if found else Api.SSE
