"""Request facts and interpreter selection, read before any response byte is analyzed."""

from __future__ import annotations

import pytest

from streamwatch.core.api import Api
from streamwatch.core.request import RequestFacts, is_event_stream, read_request, select_api


class TestSelectApi:
    """The interpreter follows the path suffix, and only event streams are analyzed at all."""

    @pytest.mark.parametrize(
        ("path", "api"),
        [
            ("/v1/chat/completions", Api.OPENAI_CHAT),
            ("/openai/v1/chat/completions/", Api.OPENAI_CHAT),
            ("/v1/responses", Api.OPENAI_RESPONSES),
            ("/anthropic/v1/messages", Api.ANTHROPIC_MESSAGES),
            ("/v1beta/models/gemini:streamGenerateContent", Api.SSE),
        ],
    )
    def test_path_suffix_picks_the_interpreter(self, path: str, api: Api) -> None:
        assert select_api(path, "text/event-stream; charset=utf-8") is api

    @pytest.mark.parametrize("content_type", [None, "", "application/json", "text/plain"])
    def test_other_content_types_are_not_analyzed(self, content_type: str | None) -> None:
        assert select_api("/v1/chat/completions", content_type) is None

    def test_media_type_is_case_insensitive_with_parameters(self) -> None:
        assert is_event_stream(" Text/Event-Stream ;charset=UTF-8")


class TestReadRequest:
    """The request's model and stream flag come from its JSON body; anything else gives no facts."""

    def test_model_and_stream(self) -> None:
        facts = read_request(b'{"messages": [], "model": "gpt-4o", "stream": true}')
        assert facts == RequestFacts(model="gpt-4o", stream=True)

    @pytest.mark.parametrize(
        "body",
        [b"", b"not json", b"[1, 2]", b'{"model": 7, "stream": "yes"}', b'{"model": ""}'],
    )
    def test_unreadable_bodies_give_no_facts(self, body: bytes) -> None:
        assert read_request(body) == RequestFacts()
