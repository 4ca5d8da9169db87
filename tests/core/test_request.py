"""Request facts and interpreter selection, read before any response byte is analyzed."""

from __future__ import annotations

import json

import pytest

from streamwatch.core.api import Api
from streamwatch.core.limits import MAX_FIELD_CHARS, MAX_PROMPT_MESSAGES, MAX_PROMPT_PARTS
from streamwatch.core.prompt import Message, Part, Prompt
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
