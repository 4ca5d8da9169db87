"""Request facts and interpreter selection, read before any response byte is analyzed."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.api import Api
from streamwatch.core.limits import MAX_FIELD_CHARS, MAX_PROMPT_MESSAGES, MAX_PROMPT_PARTS
from streamwatch.core.prompt import Message, Part, Prompt
from streamwatch.core.request import (
    RequestFacts,
    RequestFactsReader,
    is_event_stream,
    read_request,
    select_api,
)

SSE = "text/event-stream; charset=utf-8"
JSON = "application/json; charset=UTF-8"
EVENTSTREAM = "application/vnd.amazon.eventstream"
NDJSON = "application/x-ndjson"
BEDROCK = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"


class TestSelectApi:
    """The interpreter follows the path suffix, and only its own framing's media type is analyzed."""

    @pytest.mark.parametrize(
        ("path", "content_type", "api"),
        [
            ("/v1/chat/completions", SSE, Api.OPENAI_CHAT),
            ("/openai/v1/chat/completions/", SSE, Api.OPENAI_CHAT),
            ("/v1/responses", SSE, Api.OPENAI_RESPONSES),
            ("/anthropic/v1/messages", SSE, Api.ANTHROPIC_MESSAGES),
            ("/v1/completions", SSE, Api.OPENAI_COMPLETIONS),
            ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", SSE, Api.GEMINI),
            ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", JSON, Api.GEMINI_JSON),
            (f"{BEDROCK}/converse-stream", EVENTSTREAM, Api.BEDROCK_CONVERSE),
            (f"{BEDROCK}/invoke-with-response-stream", EVENTSTREAM, Api.BEDROCK_INVOKE),
            ("/api/chat", NDJSON, Api.OLLAMA_CHAT),
            ("/ollama/api/generate", NDJSON, Api.OLLAMA_GENERATE),
            ("/v2/chat", SSE, Api.COHERE_V2),
            ("/v1/unknown/stream", SSE, Api.SSE),
        ],
    )
    def test_path_and_media_type_pick_the_interpreter(
        self, path: str, content_type: str, api: Api
    ) -> None:
        assert select_api(path, content_type) is api

    @pytest.mark.parametrize(
        ("path", "content_type"),
        [
            ("/v1/chat/completions", None),
            ("/v1/chat/completions", ""),
            ("/v1/chat/completions", JSON),
            ("/v1/chat/completions", "text/plain"),
            ("/api/chat", JSON),  # stream: false answers one JSON object
            ("/v1/models", NDJSON),
            (f"{BEDROCK}/invoke", JSON),
            ("/v1/chat/completions", EVENTSTREAM),
        ],
    )
    def test_anything_else_is_not_analyzed(self, path: str, content_type: str | None) -> None:
        assert select_api(path, content_type) is None

    @pytest.mark.parametrize(
        ("override", "content_type", "api"),
        [
            (Api.OLLAMA_CHAT, NDJSON, Api.OLLAMA_CHAT),
            (Api.GEMINI, JSON, Api.GEMINI_JSON),
            (Api.OLLAMA_CHAT, SSE, Api.SSE),  # the override's framing did not come: timed only
            (Api.BEDROCK_CONVERSE, JSON, None),
        ],
    )
    def test_route_override_replaces_the_path(
        self, override: Api, content_type: str, api: Api | None
    ) -> None:
        assert select_api("/custom/llm", content_type, override) is api

    def test_media_type_is_case_insensitive_with_parameters(self) -> None:
        assert is_event_stream(" Text/Event-Stream ;charset=UTF-8")


class TestReadRequest:
    """The request's model and stream flag come from its JSON body; anything else gives no facts."""

    @pytest.mark.parametrize(
        ("path", "model", "stream"),
        [
            ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini-2.5-pro", True),
            ("/v1/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash", None),
            (f"{BEDROCK}/converse-stream", "anthropic.claude-3-5-sonnet-20240620-v1:0", True),
            (
                f"{BEDROCK}/invoke-with-response-stream",
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                True,
            ),
            ("/api/chat", None, True),  # Ollama streams unless told not to
            ("/v1/chat/completions", None, None),
        ],
    )
    def test_path_names_what_the_body_does_not(
        self, path: str, model: str | None, stream: bool | None
    ) -> None:
        assert read_request(b"{}", path) == RequestFacts(model=model, stream=stream)

    def test_body_wins_over_the_path(self) -> None:
        facts = read_request(b'{"model": "llama3.2", "stream": false}', "/api/chat")
        assert facts == RequestFacts(model="llama3.2", stream=False)

    def test_model_and_stream(self) -> None:
        facts = read_request(b'{"messages": [], "model": "gpt-4o", "stream": true}')
        assert facts == RequestFacts(model="gpt-4o", stream=True)

    @pytest.mark.parametrize(
        "body",
        [b"", b"not json", b"[1, 2]", b'{"model": 7, "stream": "yes"}', b'{"model": ""}'],
    )
    def test_unreadable_bodies_give_no_facts(self, body: bytes) -> None:
        assert read_request(body) == RequestFacts()


class TestReadPrompt:
    """The prompt is read by the core, only with content capture on, and capped in every direction."""

    def test_no_prompt_without_capture(self) -> None:
        """Without a capture limit the body's messages are never read."""
        body = b'{"model": "m", "messages": [{"role": "user", "content": "secret"}]}'
        assert read_request(body).prompt is None

    def test_text_within_one_budget_other_parts_by_type(self) -> None:
        """All text shares the limit; an image part is named by its type, its bytes never kept."""
        body = (
            b'{"system": "abcdef", "messages": [{"role": "user", "content": ['
            b'{"type": "text", "text": "ghijkl"}, {"type": "image_url", "image_url": "data:x"}]}]}'
        )
        prompt = read_request(body, capture_limit=8).prompt
        assert prompt == Prompt(
            system=(Part("text", "abcdef"),),
            messages=(Message("user", (Part("text", "gh"), Part("image_url"))),),
        )

    def test_messages_parts_and_roles_are_capped(self) -> None:
        """A body of many messages, each with a huge role, keeps the capped number and lengths."""
        messages = [{"role": "r" * 10_000, "content": "x"}] * (MAX_PROMPT_MESSAGES + 50)
        prompt = read_request(json.dumps({"messages": messages}).encode(), capture_limit=10).prompt
        assert prompt is not None
        assert prompt.messages is not None
        assert len(prompt.messages) == MAX_PROMPT_MESSAGES
        assert {len(m.role) for m in prompt.messages} == {MAX_FIELD_CHARS}
        assert sum(len(m.parts) for m in prompt.messages) <= MAX_PROMPT_PARTS


def _reference(body: bytes) -> RequestFacts:
    """What a whole-body JSON parse says (the reader must agree on every valid body)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RequestFacts()
    if not isinstance(obj, dict):
        return RequestFacts()
    model, stream = obj.get("model"), obj.get("stream")
    return RequestFacts(
        model=model[:MAX_FIELD_CHARS] if isinstance(model, str) and model else None,
        stream=stream if isinstance(stream, bool) else None,
    )


_TEXT = st.text(alphabet=st.sampled_from('ab"\\\n{}[],:é☃ '), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["model", "stream", "a", 'x"y', "b\\"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


# Raw members of a request body: keys a scan and a parse might read differently (escaped, repeated)
# and values among them long escaped models (astral characters are 12 bytes each when escaped).
_RAW_KEYS = [b'"model"', b'"stream"', b'"mod\\u0065l"', b'"str\\u0065am"', b'"a"', b'"x\\"y"']
_RAW_VALUES = st.builds(orjson.dumps, _JSON) | st.sampled_from(
    [
        b'"' + b"\\ud83d\\ude00" * 200 + b'"',
        b'"' + "\u00e9".encode() * 400 + b'"',
        b'"' + b"a\\n" * 300 + b'"',
        b'"m\\u0065"',
        b"true",
        b'"true"',
        b"1",
    ]
)


class TestRequestFactsReader:
    """The incremental reader agrees with a whole-body parse however the body is split."""

    @settings(max_examples=500, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(_RAW_KEYS), _RAW_VALUES), max_size=5))
    def test_a_whole_body_reads_as_scanned(self, members: list[tuple[bytes, bytes]]) -> None:
        """A body that arrives in one piece gives the facts it gives scanned a byte at a time:
        repeated keys, escaped keys and long escaped models included."""
        body = b"{" + b",".join(key + b":" + value for key, value in members) + b"}"
        whole, scanned = RequestFactsReader(), RequestFactsReader()
        whole.feed(body)
        for i in range(len(body)):
            scanned.feed(body[i : i + 1])
        assert whole.facts() == scanned.facts()

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(st.sampled_from(["messages", "model", "stream", "x"]), _JSON, max_size=4),
        st.lists(st.integers(0, 400), max_size=6),
    )
    def test_split_invariance(self, obj: dict[str, object], cuts: list[int]) -> None:
        """Any object, cut anywhere (inside escapes too): the same model and stream as orjson."""
        body = orjson.dumps(obj)
        reader = RequestFactsReader()
        last = 0
        for cut in sorted(c for c in cuts if c <= len(body)):
            reader.feed(body[last:cut])
            last = cut
        reader.feed(body[last:])
        assert reader.facts() == _reference(body)

    def test_model_after_a_large_body(self) -> None:
        """``model`` written after 8 MB of messages (the OpenAI SDK's order) is still found."""
        content = 'say "hi"\\n' * (1 << 20)
        body = orjson.dumps({"messages": [{"role": "user", "content": content}], "model": "m"})
        reader = RequestFactsReader()
        for i in range(0, len(body), 65536):
            reader.feed(body[i : i + 65536])
        assert reader.facts() == RequestFacts(model="m", stream=None)

    def test_model_capped(self) -> None:
        """A 5 MB model name is cut to MAX_FIELD_CHARS."""
        facts = read_request(orjson.dumps({"model": "m" * (5 << 20)}))
        assert facts.model == "m" * MAX_FIELD_CHARS
