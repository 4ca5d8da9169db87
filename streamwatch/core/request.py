"""Facts the proxy needs from a request and its response headers before any byte is analyzed."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import orjson

from streamwatch.core.api import Api
from streamwatch.core.limits import cap
from streamwatch.core.prompt import Prompt, prompt_of

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


def api_for_path(path: str) -> Api | None:
    """The LLM API a request path addresses (None for anything else, e.g. ``/v1/models``).

    Matched by suffix so gateway prefixes (``/openai/v1/...``, ``/llm/v1/...``) still match.
    """
    trimmed = path.rstrip("/")
    for suffix, api in _SUFFIXES:
        if trimmed.endswith(suffix):
            return api
    return None


_SEGMENT_SPLIT = re.compile(r"[/\\]")


def has_dot_segment(path: str) -> bool:
    """Whether a request path holds a ``.`` or ``..`` segment, in any spelling an upstream may
    decode: literal, percent-encoded (``%2e%2e``, ``..%2f``), with a backslash separator, or with
    a matrix parameter (``..;``, which Tomcat and Spring strip before resolving), also
    double-encoded.

    Routes are matched on the path as sent and the path is forwarded as sent, so a dot-segment
    would let ``/openai/../admin`` match the ``/openai`` route and then reach ``/admin`` upstream.
    Such paths are refused rather than normalised: normalising would forward bytes the client did
    not send, and no API client sends dot-segments.
    """
    decoded = path
    for _ in range(3):  # also double-encoded (%252e): some stacks decode twice
        decoded, previous = urllib.parse.unquote(decoded, errors="surrogateescape"), decoded
        if decoded == previous:
            break
    for segment in _SEGMENT_SPLIT.split(decoded):
        name = segment.partition(";")[0]
        if name in (".", ".."):
            return True
    return False


def select_api(path: str, content_type: str | None) -> Api | None:
    """The interpreter for a response: None if it is not an event stream (not analyzed at all);
    any event stream on a path that is not an LLM API is timed as generic SSE."""
    if not is_event_stream(content_type):
        return None
    return api_for_path(path) or Api.SSE


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a JSON request body says about the stream it asks for (None where it does not say);
    ``prompt`` only when content capture asked for it."""

    model: str | None = None
    stream: bool | None = None
    prompt: Prompt | None = None


def read_request(body: bytes, *, capture_limit: int | None = None) -> RequestFacts:
    """``model`` and ``stream`` from a JSON request body, parsed once; with ``capture_limit`` set
    (content capture on) also its prompt, text cut to that many characters. Unreadable bodies give
    no facts."""
    if not body:
        return RequestFacts()
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RequestFacts()
    if not isinstance(obj, dict):
        return RequestFacts()
    model = obj.get("model")
    stream = obj.get("stream")
    return RequestFacts(
        model=cap(model) if isinstance(model, str) and model else None,
        stream=stream if isinstance(stream, bool) else None,
        prompt=None if capture_limit is None else prompt_of(obj, capture_limit),
    )
