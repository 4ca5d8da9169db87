"""Facts the proxy needs from a request and its response headers before any byte is analyzed."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import orjson

from streamwatch.core.api import Api
from streamwatch.core.formats import FORMATS, MEDIA_TYPE, Framing
from streamwatch.core.limits import cap
from streamwatch.core.prompt import Prompt, prompt_of

# Path suffix -> API, first match wins (``/chat/completions`` before ``/completions``). Matched by
# suffix so gateway prefixes (``/openai/v1/...``, ``/llm/v1/...``) still match.
_SUFFIXES = (
    ("/chat/completions", Api.OPENAI_CHAT),
    ("/responses", Api.OPENAI_RESPONSES),
    ("/messages", Api.ANTHROPIC_MESSAGES),
    ("/completions", Api.OPENAI_COMPLETIONS),
    (":streamGenerateContent", Api.GEMINI),
    ("/converse-stream", Api.BEDROCK_CONVERSE),
    ("/invoke-with-response-stream", Api.BEDROCK_INVOKE),
    ("/api/chat", Api.OLLAMA_CHAT),
    ("/api/generate", Api.OLLAMA_GENERATE),
    ("/v2/chat", Api.COHERE_V2),
)
# The same API in another framing, chosen by the response's media type (Gemini without alt=sse).
_REFRAMED = {(Api.GEMINI, Framing.JSON_ARRAY): Api.GEMINI_JSON}
_FRAMING_OF_MEDIA = {media: framing for framing, media in MEDIA_TYPE.items()}


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type``, lower-cased, parameters dropped (RFC 9110 §8.3.1)."""
    return (content_type or "").partition(";")[0].strip().lower()


def is_event_stream(content_type: str | None) -> bool:
    """``text/event-stream`` with any parameters, case-insensitively."""
    return media_type(content_type) == "text/event-stream"


def api_for_path(path: str) -> Api | None:
    """The LLM API a request path addresses (None for anything else, e.g. ``/v1/models``)."""
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


def select_api(path: str, content_type: str | None, override: Api | None = None) -> Api | None:
    """The interpreter for a response, or None when it is not a stream we analyze at all.

    The API comes from the route's ``override`` if configured, else from the path; the response's
    media type must then be that API's framing (a JSON error answer on a streaming path is not a
    stream). Gemini's path answers in two framings, told apart by the media type. Any other event
    stream is timed as generic SSE.
    """
    framing = _FRAMING_OF_MEDIA.get(media_type(content_type))
    if framing is None:
        return None
    api = override or api_for_path(path)
    if api is not None:
        api = _REFRAMED.get((api, framing), api)
        if FORMATS[api].framing is framing:
            return api
    return Api.SSE if framing is Framing.SSE else None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a JSON request body says about the stream it asks for (None where it does not say);
    ``prompt`` only when content capture asked for it."""

    model: str | None = None
    stream: bool | None = None
    prompt: Prompt | None = None


# Where the model is in the path, for APIs whose body does not carry it.
_MODEL_IN_PATH = re.compile(
    r"/models/(?P<gemini>[^/:]+):(?:stream)?[gG]enerateContent$"
    r"|/model/(?P<bedrock>[^/]+)/(?:converse-stream|converse|invoke-with-response-stream|invoke)$"
)
# Paths that stream whatever the body says (Gemini and Bedrock choose by path; Ollama by default).
_STREAMING_PATHS = (":streamGenerateContent", "/converse-stream", "/invoke-with-response-stream")
_STREAM_BY_DEFAULT = ("/api/chat", "/api/generate")


def model_from_path(path: str) -> str | None:
    """The model a Gemini (``…/models/{model}:streamGenerateContent``) or Bedrock
    (``/model/{id}/converse-stream``) path names, percent-decoded and capped; else None."""
    match = _MODEL_IN_PATH.search(path.rstrip("/"))
    if match is None:
        return None
    model = urllib.parse.unquote(match.group("gemini") or match.group("bedrock"))
    return cap(model) if model else None


def read_request(body: bytes, path: str = "", *, capture_limit: int | None = None) -> RequestFacts:
    """``model`` and ``stream`` from a JSON request body, else from the path where the API puts
    them there (Gemini and Bedrock model ids; their streaming endpoints; Ollama's default). The
    body is parsed once; with ``capture_limit`` set (content capture on) its prompt is read too,
    text cut to that many characters."""
    facts = _read_body(body, capture_limit)
    model = facts.model or model_from_path(path)
    stream = facts.stream
    trimmed = path.rstrip("/")
    if stream is None and trimmed.endswith(_STREAMING_PATHS + _STREAM_BY_DEFAULT):
        stream = True
    return RequestFacts(model=model, stream=stream, prompt=facts.prompt)


def _read_body(body: bytes, capture_limit: int | None) -> RequestFacts:
    """What the JSON body itself says; unreadable bodies give no facts."""
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
