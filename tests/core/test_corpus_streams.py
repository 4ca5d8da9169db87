"""Recorded LLM streams replayed through the analyzer in every chunking, against their expectations."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.core.analyzer import AnalyzerConfig, StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.record import CloseCause, Outcome, StreamRecord
from streamwatch.core.sse import MessageDispatched, SSEDecoder
from tests.core.support import (
    CHUNKINGS,
    FIXTURE_STREAMS,
    at_cuts,
    corpus_params,
    cuts_for,
    load_llm_streams,
)

API_OF_PROTOCOL = {
    "openai_chat": Api.OPENAI_CHAT,
    "openai_responses": Api.OPENAI_RESPONSES,
    "anthropic_messages": Api.ANTHROPIC_MESSAGES,
    "other": Api.SSE,
}
USAGE_FIELD = {  # corpus usage key -> Usage attribute
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "total_tokens": "total_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "cached_input_tokens": "cached_input_tokens",
    "cache_read_input_tokens": "cached_input_tokens",
    "cache_creation_input_tokens": "cache_creation_input_tokens",
}
CAPTURE_ALL = AnalyzerConfig(capture_content=True, capture_limit_chars=1 << 30)


def analyze(api: Api, chunks: Iterable[bytes]) -> StreamRecord:
    """Feed reads 1 µs apart (request at 0) and close on a clean upstream EOF."""
    analyzer = StreamAnalyzer(api, 0, request_model="requested-model", config=CAPTURE_ALL)
    at = 0
    for at, chunk in enumerate(chunks, start=1):
        analyzer.feed(chunk, at * 1000)
    _, record = analyzer.close((at + 1) * 1000, CloseCause.UPSTREAM_EOF)
    return record


def chunking_free(record: StreamRecord) -> StreamRecord:
    """The record without the fields that legitimately depend on when reads arrived."""
    return dataclasses.replace(
        record,
        ttfb_ns=None,
        ttft_ns=None,
        max_gap_ns=None,
        tokens_per_second=None,
        t_end_ns=0,
        stalls=(),
    )


def _valid_json(text: str | None) -> bool:
    try:
        json.loads(text or "")
    except ValueError:
        return False
    return True


def check_against_expected(record: StreamRecord, expected: dict[str, Any]) -> None:
    """Assert every field of the corpus ``.expected.json`` schema the analyzer reports."""
    assert record.sse_events == expected["sse_event_count"]
    assert record.undispatched_tail == (expected["undispatched_tail"] is not None)
    assert record.oversize_events == 0
    if expected["protocol"] == "other":  # timed only: nothing may look wrong or like output
        assert record.malformed_frames == 0
        assert record.error_frames == ()
        assert record.output_events == 0
        assert record.first_output_event_index is None
        assert record.outcome is Outcome.COMPLETED  # no terminal frame to wait for
        return
    assert record.first_output_event_index == expected["first_content_event_index"]
    assert record.text_chars == expected["text_length_chars"]
    assert record.captured_text == expected["text"]
    assert list(record.finish_reasons) == expected["finish_reasons"]
    assert record.response_model == expected["model"]
    assert record.model == (expected["model"] or "requested-model")
    marker = expected["termination_marker"] if expected["terminated_properly"] else None
    assert record.terminal_frame == marker
    assert [(e.event_index, e.error_type) for e in record.error_frames] == [
        (e["index"], e["error"].get("type") or e["error"].get("code"))
        for e in expected["error_frames"]
    ]
    assert [
        (t.name, t.call_id, t.arguments, _valid_json(t.arguments)) for t in record.tool_calls
    ] == [
        (t["name"], t["id"], t["arguments"], t["arguments_valid_json"])
        for t in expected["tool_calls"]
    ]
    assert [t.arguments_chars for t in record.tool_calls] == [
        len(t["arguments"]) for t in expected["tool_calls"]
    ]
    assert record.reasoning_chars == expected["reasoning"]["text_length_chars"]
    assert record.refusal_chars == len(expected.get("refusal", ""))
    non_json = len(expected["non_json_event_indices"])
    assert record.malformed_frames == non_json - (expected["done_sentinel_index"] is not None)
    usage = expected["usage"]
    if usage is None:
        assert record.usage is None
    else:
        assert record.usage is not None
        for key, value in usage.items():
            if key != "source":
                assert getattr(record.usage, USAGE_FIELD[key]) == value, key
        if "output_tokens" in usage:
            assert record.output_tokens == usage["output_tokens"]
            assert not record.output_tokens_estimated
        else:  # no output report (Anthropic's message_start count is a placeholder): estimated
            assert record.usage.output_tokens is None
            assert record.output_tokens == record.output_events
            assert record.output_tokens_estimated
    if expected["error_frames"]:
        outcome = Outcome.ERROR_FRAME
    else:
        outcome = Outcome.COMPLETED if expected["terminated_properly"] else Outcome.TRUNCATED
    assert record.outcome is outcome


def event_types(raw: bytes) -> Counter[str]:
    decoder = SSEDecoder()
    items = [*decoder.feed(raw), *decoder.close()]
    return Counter(i.event for i in items if isinstance(i, MessageDispatched))


# -- project-owned fixture streams ------------------------------------------------------------------


def fixture(
    protocol: str,
    *,
    events: dict[str, int],
    first: int | None,
    text: str,
    finish: list[str],
    model: str,
    usage: dict[str, int] | None = None,
    terminal: str | None = None,
    errors: tuple[tuple[int, str], ...] = (),
    tools: tuple[tuple[str, str, str], ...] = (),
    reasoning: int = 0,
    output_events: int,
) -> dict[str, Any]:
    """An expectation in the corpus ``.expected.json`` schema (the keys the analyzer can report)."""
    return {
        "protocol": protocol,
        "sse_event_count": sum(events.values()),
        "sse_event_types": events,
        "non_json_event_indices": [0] if terminal == "[DONE]" else [],
        "done_sentinel_index": 0 if terminal == "[DONE]" else None,
        "first_content_event_index": first,
        "text": text,
        "text_length_chars": len(text),
        "finish_reasons": finish,
        "model": model,
        "usage": usage,
        "terminated_properly": terminal is not None,
        "termination_marker": terminal,
        "error_frames": [{"index": i, "error": {"type": t}} for i, t in errors],
        "tool_calls": [
            {"name": n, "id": i, "arguments": a, "arguments_valid_json": _valid_json(a)}
            for n, i, a in tools
        ],
        "reasoning": {"text_length_chars": reasoning},
        "undispatched_tail": None,
        "output_events": output_events,
    }


GPT4O = "gpt-4o-2024-08-06"
NANO = "gpt-4.1-nano-2025-04-14"
SONNET = "claude-sonnet-4-5-20250929"
RESPONSES_START = {
    "response.created": 1,
    "response.in_progress": 1,
    "response.output_item.added": 1,
    "response.content_part.added": 1,
}
FIXTURES: dict[str, dict[str, Any]] = {
    "openai-chat-usage-tool-call.sse": fixture(
        "openai_chat",
        events={"message": 9},
        first=1,
        text="Let me check the weather ☀.",
        finish=["tool_calls"],
        model=GPT4O,
        usage={
            "input_tokens": 50,
            "output_tokens": 17,
            "total_tokens": 67,
            "cached_input_tokens": 10,
            "reasoning_tokens": 0,
        },
        terminal="[DONE]",
        tools=(("get_weather", "call_fx1", '{"city": "Paris"}'),),
        output_events=5,
    ),
    "openai-chat-error-frame.sse": fixture(
        "openai_chat",
        events={"message": 3},
        first=0,
        text="Hello",
        finish=[],
        model=GPT4O,
        errors=((2, "server_error"),),
        output_events=2,
    ),
    "openai-responses-text.sse": fixture(
        "openai_responses",
        events={
            "response.created": 1,
            "response.in_progress": 1,
            "response.output_item.added": 2,
            "response.reasoning_summary_text.delta": 1,
            "response.content_part.added": 1,
            "response.output_text.delta": 3,
            "response.output_text.done": 1,
            "response.content_part.done": 1,
            "response.output_item.done": 1,
            "response.completed": 1,
        },
        first=3,
        text="Hi there!",
        finish=["completed"],
        model=NANO,
        usage={
            "input_tokens": 12,
            "output_tokens": 5,
            "total_tokens": 17,
            "reasoning_tokens": 3,
            "cached_input_tokens": 0,
        },
        terminal="response.completed",
        reasoning=len("Greeting."),
        output_events=4,
    ),
    "openai-responses-error-flat.sse": fixture(
        "openai_responses",
        events={**RESPONSES_START, "response.output_text.delta": 1, "error": 1},
        first=4,
        text="Par",
        finish=[],
        model=NANO,
        errors=((5, "rate_limit_exceeded"),),
        output_events=1,
    ),
    "openai-responses-error-nested.sse": fixture(
        "openai_responses",
        events={**RESPONSES_START, "response.output_text.delta": 1, "error": 1},
        first=4,
        text="Par",
        finish=[],
        model=NANO,
        errors=((5, "service_unavailable_error"),),
        output_events=1,
    ),
    "openai-responses-failed.sse": fixture(
        "openai_responses",
        events={**RESPONSES_START, "response.output_text.delta": 1, "response.failed": 1},
        first=4,
        text="Partial",
        finish=["failed"],
        model=NANO,
        terminal="response.failed",
        errors=((5, "server_error"),),
        output_events=1,
    ),
    "openai-responses-incomplete.sse": fixture(
        "openai_responses",
        events={**RESPONSES_START, "response.output_text.delta": 2, "response.incomplete": 1},
        first=4,
        text="Once upon a time",
        finish=["incomplete:max_output_tokens"],
        model=NANO,
        usage={"input_tokens": 9, "output_tokens": 4, "total_tokens": 13, "reasoning_tokens": 0},
        terminal="response.incomplete",
        output_events=2,
    ),
    "anthropic-thinking-tool-use.sse": fixture(
        "anthropic_messages",
        events={
            "message_start": 1,
            "content_block_start": 3,
            "content_block_delta": 7,
            "content_block_stop": 3,
            "ping": 1,
            "message_delta": 1,
            "message_stop": 1,
        },
        first=2,
        text="Checking…",
        finish=["tool_use"],
        model=SONNET,
        usage={
            "input_tokens": 30,
            "output_tokens": 42,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 0,
        },
        terminal="message_stop",
        tools=(("get_weather", "toolu_fx1", '{"location": "Paris"}'),),
        reasoning=len("The user wants the weather."),
        output_events=6,
    ),
    "anthropic-error-frame.sse": fixture(
        "anthropic_messages",
        events={"message_start": 1, "content_block_start": 1, "content_block_delta": 1, "error": 1},
        first=2,
        text="Hello",
        finish=[],
        model=SONNET,
        # Cut before message_delta: message_start's "output_tokens": 1 is a placeholder, not a
        # report (the corpus schema would list it; streamwatch deliberately does not).
        usage={"input_tokens": 8},
        errors=((3, "overloaded_error"),),
        output_events=1,
    ),
}


def fixture_streams() -> list[tuple[str, bytes, dict[str, Any]]]:
    return [
        (f"fixtures/{name}", (FIXTURE_STREAMS / name).read_bytes(), expected)
        for name, expected in FIXTURES.items()
    ]


def _stream_id(item: tuple[str, bytes, dict[str, Any]]) -> str:
    return item[0]


STREAMS = corpus_params(load_llm_streams, _stream_id)
OWN = [pytest.param(item, id=_stream_id(item)) for item in fixture_streams()]


@cache
def whole_record(name: str, raw: bytes, protocol: str) -> StreamRecord:
    return analyze(API_OF_PROTOCOL[protocol], [raw])


def _check_stream(item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
    name, raw, expected = item
    api = API_OF_PROTOCOL[expected["protocol"]]
    record = analyze(api, CHUNKINGS[chunking](raw))
    check_against_expected(record, expected)
    assert chunking_free(record) == chunking_free(whole_record(name, raw, expected["protocol"]))
    assert record.body_bytes == len(raw)
    assert record.ttfb_ns == 1000
    if "output_events" in expected:
        assert record.output_events == expected["output_events"]


ALL_CHUNKINGS = list(CHUNKINGS)


@pytest.mark.corpus
@pytest.mark.usefixtures("corpus_dir")
class TestCorpusStreams:
    """Every corpus stream yields its expected record in every chunking, and the same record in each."""

    @pytest.mark.parametrize("chunking", ALL_CHUNKINGS)
    @pytest.mark.parametrize("item", STREAMS)
    def test_stream(self, item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
        _check_stream(item, chunking)

    @pytest.mark.parametrize("item", STREAMS)
    def test_sse_event_types(self, item: tuple[str, bytes, dict[str, Any]]) -> None:
        _, raw, expected = item
        assert event_types(raw) == Counter(expected["sse_event_types"])

    def test_hypothesis_splits(self, corpus_dir: Any) -> None:
        streams = load_llm_streams(corpus_dir)

        @given(st.data())
        def check(data: st.DataObject) -> None:
            name, raw, expected = data.draw(st.sampled_from(streams))
            record = analyze(
                API_OF_PROTOCOL[expected["protocol"]], at_cuts(raw, data.draw(cuts_for(raw)))
            )
            assert chunking_free(record) == chunking_free(
                whole_record(name, raw, expected["protocol"])
            )

        check()


class TestFixtureStreams:
    """Each project-owned stream yields its hand-written expectations in every chunking."""

    @pytest.mark.parametrize("chunking", ALL_CHUNKINGS)
    @pytest.mark.parametrize("item", OWN)
    def test_stream(self, item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
        _check_stream(item, chunking)

    @pytest.mark.parametrize("item", OWN)
    def test_sse_event_types(self, item: tuple[str, bytes, dict[str, Any]]) -> None:
        _, raw, expected = item
        assert event_types(raw) == Counter(expected["sse_event_types"])

    @given(st.data())
    def test_hypothesis_splits(self, data: st.DataObject) -> None:
        _, raw, expected = data.draw(st.sampled_from(fixture_streams()))
        record = analyze(
            API_OF_PROTOCOL[expected["protocol"]], at_cuts(raw, data.draw(cuts_for(raw)))
        )
        check_against_expected(record, expected)
        assert record.output_events == expected["output_events"]

    def test_generic_sse_clean_eof_is_not_truncated(self) -> None:
        record = analyze(Api.SSE, [b'data: {"candidates": [{"finishReason": "STOP"}]}\r\n\r\n'])
        assert record.outcome is Outcome.COMPLETED

    def test_every_fixture_file_has_expectations(self) -> None:
        assert sorted(p.name for p in FIXTURE_STREAMS.glob("*.sse")) == sorted(FIXTURES)
