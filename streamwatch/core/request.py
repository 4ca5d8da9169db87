"""Facts the proxy needs from a request and its response headers before any byte is analyzed."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import orjson

from streamwatch.core.api import Api
from streamwatch.core.formats import FORMATS, MEDIA_TYPE, Framing
from streamwatch.core.limits import MAX_FIELD_CHARS, cap
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
    if "." not in path and "%" not in path:  # no dot, not even encoded: the usual API path
        return False
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


_TOP_LEVEL = re.compile(rb'[{}\[\]",:]')
_NESTED = re.compile(rb'[{}\[\]"]')
_KEY_BYTES = 16  # longer keys are neither "model" nor "stream": not kept
_BACKSLASH = (
    0x5C  # an int: ``bytes in bytes`` first tries its needle as an int (a TypeError built per call)
)
#: A first piece up to this size that is a whole JSON object is read by orjson, not scanned.
_WHOLE_BYTES = 64 << 10
_RAW_MODEL_BYTES = MAX_FIELD_CHARS * 6  # room for a capped model written with \uXXXX escapes
_SCALAR_BYTES = 16


class RequestFactsReader:
    """``model`` and ``stream`` from a JSON request body fed in pieces, in bounded memory.

    The proxy forwards a request body as it arrives and cannot hold it whole, and the OpenAI SDK
    writes ``model`` after ``messages``, so the model is often in the last bytes of a large body.
    This is a bounded scan of the top-level object, not a JSON parser: a regex jumps to the next
    byte that matters (the closing quote inside strings, found with ``bytes.find`` once escapes
    are masked; a bracket, quote, colon or comma outside), so the cost is a few C-level passes per
    piece and one Python step per string, and the state
    is a depth counter and at most a few hundred bytes of the values it keeps. Chosen over ijson's
    C push parser, which materialises every string of the body (each message's content) as a
    Python object. Malformed JSON never raises; it may yield no facts (as ``orjson`` would).

    Most request bodies arrive whole in their first piece, and the scan's Python steps per string
    cost more than ``orjson.loads`` of a body of a few KiB, so a first piece that is one whole
    JSON object (at most :data:`_WHOLE_BYTES`) is parsed instead, when that cannot tell anything
    else than the scan would: no ``\\u`` escape (the only one that can spell a key ``model``
    without those bytes) and no second ``"model"`` or ``"stream"`` (the scan keeps the last
    string model and the last boolean, where a parse keeps the last value).
    """

    __slots__ = (
        "_current",
        "_depth",
        "_escaped",
        "_expect_key",
        "_in_string",
        "_model",
        "_parsed",
        "_scalar",
        "_started",
        "_stopped",
        "_stream",
        "_text",
    )

    def __init__(self) -> None:
        self._started = False
        self._stopped = False  # the top-level object ended, or the body is not an object
        self._depth = 0
        self._in_string = False
        self._escaped = False  # the previous piece ended in a lone backslash
        self._expect_key = True
        self._current: bytes | None = None  # the top-level key whose value comes next
        self._text: bytearray | None = None  # the string being read, when it is kept
        self._scalar: bytearray | None = None  # the literal after "stream":
        self._model: bytes | None = None
        self._stream: bool | None = None
        self._parsed: RequestFacts | None = None  # the whole body was read by orjson

    def feed(self, data: bytes) -> None:
        """Scan the next piece of the body."""
        if self._stopped:
            return
        i, end = 0, len(data)
        if not self._started:
            if end <= _WHOLE_BYTES and self._parse(data):
                return
            while i < end and data[i] in b" \t\r\n":
                i += 1
            if i == end:
                return
            if data[i] != 0x7B:  # "{"
                self._stopped = True
                return
            self._started, self._depth, i = True, 1, i + 1
        masked = self._mask(data)
        while i < end:
            if self._in_string:
                i = self._string(data, masked, i, end)
                continue
            pattern = _TOP_LEVEL if self._depth == 1 else _NESTED
            match = pattern.search(masked, i)
            stop = end if match is None else match.start()
            if self._scalar is not None and len(self._scalar) < _SCALAR_BYTES:
                self._scalar += data[i:stop][: _SCALAR_BYTES - len(self._scalar)]
            if match is None:
                return
            i = stop + 1
            char = data[stop]
            if char in b'"{[':
                self._scalar = None  # a string, object or array: not a true/false literal
            if char == 0x22:  # '"'
                self._in_string = True
                keep = self._depth == 1 and (self._expect_key or self._current == b"model")
                self._text = bytearray() if keep else None
            elif char in b"{[":
                self._depth += 1
            elif char in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    self._end_value()
                    self._stopped = True
                    return
            elif char == 0x3A:  # ":" at the top level
                self._expect_key = False
                self._scalar = bytearray() if self._current == b"stream" else None
            else:  # "," at the top level
                self._end_value()
                self._expect_key, self._current = True, None

    def _parse(self, data: bytes) -> bool:
        """Read a first piece that is a whole object with ``orjson``; whether it was."""
        # (``find``, not ``in``: a bytes needle in ``in`` is first tried as an int, at ten times
        # the search's cost)
        if data.find(b"\\u") >= 0 or data.count(b'"model"') > 1 or data.count(b'"stream"') > 1:
            return False
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False  # not whole, or not JSON: the scan says what its valid prefix says
        if type(body) is not dict:
            return False
        model, stream = body.get("model"), body.get("stream")
        self._parsed = RequestFacts(
            model=cap(model) if type(model) is str and model else None,
            stream=stream if type(stream) is bool else None,
        )
        self._started = self._stopped = True
        return True

    def _mask(self, data: bytes) -> bytes:
        """``data`` with every escaped backslash and escaped quote overwritten, same length, so
        each quote left is a real one and ``bytes.find`` (memchr) jumps from string to string."""
        if not self._escaped and _BACKSLASH not in data:
            masked = data
        else:
            head = 1 if self._escaped else 0  # the previous piece ended in a lone backslash
            masked = b"_" * head + data[head:].replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self._escaped = masked.endswith(b"\\")
        return masked

    def _string(self, data: bytes, masked: bytes, i: int, end: int) -> int:
        """Advance inside a string to its closing quote; returns the next position."""
        quote = masked.find(b'"', i)
        if quote == -1:
            self._keep(data[i:end])
            return end
        self._keep(data[i:quote])
        self._in_string = False
        text, self._text = self._text, None
        if text is not None:
            if self._expect_key:
                self._current = bytes(text) if len(text) <= _KEY_BYTES else None
            else:
                self._model = bytes(text)
        return quote + 1

    def _keep(self, piece: bytes) -> None:
        text = self._text
        if text is not None and piece:
            limit = _KEY_BYTES + 1 if self._expect_key else _RAW_MODEL_BYTES
            if len(text) < limit:
                text += piece[: limit - len(text)]

    def _end_value(self) -> None:
        if self._scalar is not None:
            literal = bytes(self._scalar).strip()
            self._stream = True if literal == b"true" else False if literal == b"false" else None
            self._scalar = None

    def facts(self) -> RequestFacts:
        """What the body said, once it has been fed whole."""
        if self._parsed is not None:
            return self._parsed
        return RequestFacts(model=_decode_model(self._model), stream=self._stream)


def _decode_model(raw: bytes | None) -> str | None:
    if not raw:
        return None
    for cut in range(6):  # a kept prefix may end inside an escape: back off a few bytes
        try:
            value = orjson.loads(b'"' + raw[: len(raw) - cut] + b'"')
        except orjson.JSONDecodeError:
            continue
        return cap(value) if isinstance(value, str) and value else None
    return None


def complete_facts(
    facts: RequestFacts, body: bytes, path: str, capture_limit: int | None
) -> RequestFacts:
    """A body's facts (from :class:`RequestFactsReader`) completed once the body has arrived:
    model and stream from the path where the API puts them there (Gemini and Bedrock model ids;
    their streaming endpoints; Ollama's default), and, only with ``capture_limit`` set (content
    capture on, the proxy then keeps the body), the prompt, text cut to that many characters."""
    model = facts.model or model_from_path(path)
    stream = facts.stream
    trimmed = path.rstrip("/")
    if stream is None and trimmed.endswith(_STREAMING_PATHS + _STREAM_BY_DEFAULT):
        stream = True
    return RequestFacts(model=model, stream=stream, prompt=_prompt(body, capture_limit))


def _prompt(body: bytes, capture_limit: int | None) -> Prompt | None:
    if capture_limit is None or not body:
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return prompt_of(obj, capture_limit) if isinstance(obj, dict) else None


def read_request(body: bytes, path: str = "", *, capture_limit: int | None = None) -> RequestFacts:
    """Everything :func:`complete_facts` says about a whole request body."""
    reader = RequestFactsReader()
    reader.feed(body)
    return complete_facts(reader.facts(), body, path, capture_limit)
