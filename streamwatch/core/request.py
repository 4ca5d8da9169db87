"""Facts the proxy needs from a request and its response headers before any byte is analyzed."""

from __future__ import annotations

import orjson

from streamwatch.core.events import Api

_SUFFIXES = (
    ("/chat/completions", Api.OPENAI_CHAT),
    ("/responses", Api.OPENAI_RESPONSES),
    ("/messages", Api.ANTHROPIC_MESSAGES),
)


def is_event_stream(content_type: str | None) -> bool:
    """``text/event-stream`` with any parameters, case-insensitively (RFC 9110 §8.3.1)."""
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def select_api(path: str, content_type: str | None) -> Api | None:
    """The interpreter for a response: None if it is not an event stream (not analyzed at all).

    Chosen by the request path's suffix so gateway prefixes (``/openai/v1/...``, ``/llm/v1/...``)
    still match; any other event stream is timed as generic SSE.
    """
    if not is_event_stream(content_type):
        return None
    trimmed = path.rstrip("/")
    for suffix, api in _SUFFIXES:
        if trimmed.endswith(suffix):
            return api
    return Api.SSE


def request_model(body: bytes) -> str | None:
    """The ``model`` a JSON request body asks for, if it is readable (never raises)."""
    if not body:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) and model else None
