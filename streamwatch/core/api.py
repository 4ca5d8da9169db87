"""Which API a stream speaks: the name of the interpreter that reads it (the ``api`` metric label)."""

from __future__ import annotations

from enum import StrEnum


class Api(StrEnum):
    """Which protocol interpreter, over which framing, reads a stream (the ``api`` metric label).

    A fixed set: adding a member adds a label value. ``gemini`` and ``gemini_json`` are the same
    API read from its two framings (``?alt=sse`` event stream, or one streamed JSON array).
    """

    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    OPENAI_COMPLETIONS = "openai_completions"  # legacy /v1/completions
    GEMINI = "gemini"  # :streamGenerateContent?alt=sse
    GEMINI_JSON = "gemini_json"  # :streamGenerateContent, one JSON array as application/json
    BEDROCK_CONVERSE = "bedrock_converse"  # /model/{id}/converse-stream, AWS event stream
    BEDROCK_INVOKE = "bedrock_invoke"  # /model/{id}/invoke-with-response-stream
    OLLAMA_CHAT = "ollama_chat"  # /api/chat, NDJSON
    OLLAMA_GENERATE = "ollama_generate"  # /api/generate, NDJSON
    COHERE_V2 = "cohere_v2"  # /v2/chat
    SSE = "sse"  # an event stream we do not interpret: timed only
