"""Which API a stream speaks: the name of the interpreter that reads it (the ``api`` metric label)."""

from __future__ import annotations

from enum import StrEnum


class Api(StrEnum):
    """Which protocol interpreter reads a stream (the ``api`` metric label)."""

    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    SSE = "sse"  # an event stream we do not interpret: timed only
