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
from streamwatch.core.eventstream import EventStreamDecoder, EventStreamMessage, MessageCorrupt
from streamwatch.core.json_array import ElementReceived, JSONArrayDecoder
from streamwatch.core.ndjson import NDJSONDecoder
from streamwatch.core.record import CloseCause, Outcome, StreamRecord
from streamwatch.core.sse import MessageDispatched, SSEDecoder
from tests.core.support import (
    CHUNKINGS,
    FIXTURE_STREAMS,
    at_cuts,
    corpus_params,
    cuts_for,
    frame_reads,
    load_llm_streams,
    load_provider_streams,
)

API_OF_DIALECT = {  # the older llm-streams rows with protocol "other"
    "gemini_generate_content": Api.GEMINI,
    "cohere_chat_v2": Api.COHERE_V2,
}
# Corpus usage keys the record does not carry: Cohere's billed units are billing, not token counts;
# Gemini's tool-use prompt tokens are part of the prompt, not a separate family.
USAGE_NOT_RECORDED = frozenset(
    {"billed_input_tokens", "billed_output_tokens", "tool_use_prompt_tokens"}
)
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


def api_of(expected: dict[str, Any]) -> Api:
    """The interpreter for a corpus row: its protocol (or dialect), and for Gemini its framing."""
    if expected["protocol"] == "other":
        return API_OF_DIALECT[expected["dialect"]]
    if expected.get("framing") == "json_array":
        return Api.GEMINI_JSON
    return Api(expected["protocol"])


def framing_of(expected: dict[str, Any]) -> str:
    return str(expected.get("framing", "sse"))


def expected_error(error_frame: dict[str, Any]) -> tuple[int, str]:
    """(index, type) of a corpus error frame as the record reports it.

    Types: the provider's ``type`` (OpenAI, Anthropic), Gemini's RPC ``status``, Bedrock's
    ``:exception-type`` / ``:error-code``, ``error`` for Ollama's bare strings. A Gemini error
    object outside any event is reported at the number of events before it.
    """
    error = error_frame.get("error")
    kind = error_frame.get("exception_type") or error_frame.get("error_code")
    if kind is None and isinstance(error, dict):
        kind = error.get("type") or error.get("status") or error.get("code")
    index = error_frame["index"]
    return (error_frame["after_event_count"] if index is None else index), kind or "error"


def expected_tail(expected: dict[str, Any]) -> bool:
    """Whether the body ended inside a frame (an SSE block, an open array, a partial message)."""
    if "json_array" in expected:
        return not expected["json_array"]["closed"]
    if "eventstream" in expected:
        return bool(expected["eventstream"]["trailing_bytes"])
    return expected.get("undispatched_tail") is not None


def non_json_frames(expected: dict[str, Any]) -> int:
    """Frames whose payload is not JSON, excluding a ``[DONE]`` sentinel (that one is expected)."""
    if "ndjson" in expected:
        return len(expected["ndjson"]["non_json_line_indices"])
    non_json = len(expected.get("non_json_event_indices", []))
    return non_json - (expected.get("done_sentinel_index") is not None)


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


def expected_timings(expected: dict[str, Any]) -> dict[str, int]:
    """The upstream-reported durations a corpus reading lists, in ns, by the record's names."""
    if "upstream_timings_ns" in expected:  # a project fixture says it directly
        return dict(expected["upstream_timings_ns"])
    out: dict[str, int] = {}
    if (metrics := expected.get("metrics")) and metrics.get("latency_ms") is not None:
        out["bedrock_latency"] = metrics["latency_ms"] * 1_000_000
    invocation = expected.get("invocation_metrics") or {}
    for name, key in (
        ("bedrock_invocation_latency", "invocationLatency"),
        ("bedrock_first_byte_latency", "firstByteLatency"),
    ):
        if key in invocation:
            out[name] = invocation[key] * 1_000_000
    for name, key in (
        ("ollama_total", "total_duration_ns"),
        ("ollama_load", "load_duration_ns"),
        ("ollama_prompt_eval", "prompt_eval_duration_ns"),
        ("ollama_eval", "eval_duration_ns"),
    ):
        if (expected.get("timings") or {}).get(key) is not None:
            out[name] = expected["timings"][key]
    return out


def check_against_expected(record: StreamRecord, expected: dict[str, Any]) -> None:
    """Assert every field of the corpus ``.expected.json`` schema the analyzer reports."""
    frames = expected["frame_count"] if "frame_count" in expected else expected["sse_event_count"]
    assert record.frames == frames
    assert record.undispatched_tail == expected_tail(expected)
    assert record.oversize_events == 0
    assert record.first_output_event_index == expected["first_content_event_index"]
    assert record.text_chars == expected["text_length_chars"]
    assert record.captured_text == expected["text"]
    assert list(record.finish_reasons) == expected["finish_reasons"]
    assert record.response_model == expected["model"]
    assert record.model == (expected["model"] or "requested-model")
    marker = expected["termination_marker"] if expected["terminated_properly"] else None
    assert record.terminal_frame == marker
    assert [(e.event_index, e.error_type) for e in record.error_frames] == [
        expected_error(e) for e in expected["error_frames"]
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
    assert record.malformed_frames == non_json_frames(expected)
    assert dict(record.upstream_timings) == expected_timings(expected)
    usage = expected["usage"]
    if usage is None:
        assert record.usage is None
    else:
        assert record.usage is not None
        for key, value in usage.items():
            if key != "source" and key not in USAGE_NOT_RECORDED:
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


def eventstream_summary(raw: bytes) -> dict[str, Any]:
    """What the corpus counts of an AWS event stream, from our decoder."""
    decoder = EventStreamDecoder()
    items = [*decoder.feed(raw), *decoder.close()]
    messages = [i for i in items if isinstance(i, EventStreamMessage)]
    return {
        "message_types": dict(Counter(m.message_type for m in messages)),
        "event_types": dict(
            Counter(
                m.headers.get(":event-type")
                or m.headers.get(":exception-type")
                or m.headers.get(":error-code")
                for m in messages
            )
        ),
        "header_names": sorted({name for m in messages for name in m.headers}),
        "crc_failures": [i for i, item in enumerate(items) if isinstance(item, MessageCorrupt)],
    }


def event_types(raw: bytes) -> Counter[str]:
    decoder = SSEDecoder()
    items = [*decoder.feed(raw), *decoder.close()]
    return Counter(i.event for i in items if isinstance(i, MessageDispatched))


# -- project-owned fixture streams ------------------------------------------------------------------


def fixture(
    protocol: str,
    *,
    events: dict[str, int] | None = None,
    frames: int = 0,
    framing: str = "sse",
    first: int | None,
    text: str,
    finish: list[str],
    model: str | None,
    usage: dict[str, int] | None = None,
    terminal: str | None = None,
    errors: tuple[tuple[int, str], ...] = (),
    tools: tuple[tuple[str, str | None, str], ...] = (),
    reasoning: int = 0,
    output_events: int,
    timings: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An expectation in the corpus ``.expected.json`` schema (the keys the analyzer can report).

    SSE streams give their ``events`` per type; other framings their number of ``frames``.
    """
    done = terminal is not None and terminal.endswith("[DONE]")
    return {
        "protocol": protocol,
        "framing": framing,
        "frame_count": sum(events.values()) if events else frames,
        "sse_event_types": events or {},
        "non_json_event_indices": [0] if done else [],
        "done_sentinel_index": 0 if done else None,
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
        "upstream_timings_ns": timings or {},
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
    "gemini-thought-tool-call.sse": fixture(
        "gemini",
        events={"message": 3},
        first=0,
        text="Let me check ☀.",
        finish=["STOP"],
        model="gemini-2.5-flash",
        usage={"input_tokens": 20, "output_tokens": 12, "total_tokens": 40, "reasoning_tokens": 8},
        terminal="finishReason",
        tools=(("get_weather", None, '{"city":"Paris","unit":"C"}'),),
        reasoning=len("Thinking about the weather."),
        output_events=3,
    ),
    "gemini-error-frame.sse": fixture(
        "gemini",
        events={"message": 2},
        first=0,
        text="Partial",
        finish=[],
        model="gemini-2.5-flash",
        errors=((1, "RESOURCE_EXHAUSTED"),),
        output_events=1,
    ),
    "gemini-array-max-tokens.json": fixture(
        "gemini",
        framing="json_array",
        frames=2,
        first=0,
        text="Once upon a time",
        finish=["MAX_TOKENS"],
        model="gemini-2.5-flash",
        usage={"input_tokens": 5, "output_tokens": 4, "total_tokens": 9},
        terminal="finishReason+]",
        output_events=2,
    ),
    "bedrock-converse-reasoning-tool.bin": fixture(
        "bedrock_converse",
        framing="aws_eventstream",
        frames=12,
        first=1,
        text="Checking…",
        finish=["tool_use"],
        model=None,
        usage={"input_tokens": 30, "output_tokens": 25, "total_tokens": 55},
        terminal="messageStop+metadata",
        tools=(("get_weather", "tooluse_fx1", '{"city": "Paris"}'),),
        reasoning=len("User wants weather."),
        output_events=5,
        timings={"bedrock_latency": 812_000_000},
    ),
    "bedrock-converse-throttled.bin": fixture(
        "bedrock_converse",
        framing="aws_eventstream",
        frames=3,
        first=1,
        text="Hel",
        finish=[],
        model=None,
        errors=((2, "throttlingException"),),
        output_events=1,
    ),
    "bedrock-invoke-titan.bin": fixture(
        "bedrock_invoke",
        framing="aws_eventstream",
        frames=2,
        first=0,
        text="Hello world",
        finish=["FINISH"],
        model=None,
        usage={"input_tokens": 3, "output_tokens": 2},
        terminal="completionReason",
        output_events=2,
        timings={
            "bedrock_invocation_latency": 120_000_000,
            "bedrock_first_byte_latency": 80_000_000,
        },
    ),
    "ollama-chat-thinking-tool.ndjson": fixture(
        "ollama_chat",
        framing="ndjson",
        frames=4,
        first=0,
        text="Checking.",
        finish=["stop"],
        model="llama3.2",
        usage={"input_tokens": 14, "output_tokens": 9},
        terminal="done:true",
        tools=(("get_weather", None, '{"city":"Paris"}'),),
        reasoning=len("Weather needs a tool."),
        output_events=3,
        timings={
            "ollama_total": 900_000_000,
            "ollama_load": 1_000_000,
            "ollama_prompt_eval": 100_000_000,
            "ollama_eval": 700_000_000,
        },
    ),
    "ollama-generate-error.ndjson": fixture(
        "ollama_generate",
        framing="ndjson",
        frames=3,
        first=0,
        text="Once upon",
        finish=[],
        model="llama3.2",
        errors=((2, "error"),),
        output_events=2,
    ),
    "cohere-v2-error.sse": fixture(
        "cohere_v2",
        events={"message-start": 1, "content-start": 1, "content-delta": 1, "message-end": 1},
        first=2,
        text="Ahoy",
        finish=["ERROR"],
        model=None,
        terminal="message-end",
        errors=((3, "ERROR"),),
        output_events=1,
    ),
    "openai-completions-usage.sse": fixture(
        "openai_completions",
        events={"message": 4},
        first=0,
        text="Hello there",
        finish=["length"],
        model="gpt-3.5-turbo-instruct",
        usage={"input_tokens": 4, "output_tokens": 2, "total_tokens": 6},
        terminal="[DONE]",
        output_events=2,
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
PROVIDER_STREAMS = corpus_params(load_provider_streams, _stream_id)
OWN = [pytest.param(item, id=_stream_id(item)) for item in fixture_streams()]


@cache
def whole_record(name: str, raw: bytes, api: Api) -> StreamRecord:
    return analyze(api, [raw])


def reads(raw: bytes, chunking: str, framing: str) -> list[bytes]:
    """``raw`` in the named chunking; "per-event" is one frame per read in the stream's framing."""
    return frame_reads(raw, framing) if chunking == "per-event" else CHUNKINGS[chunking](raw)


def _check_stream(item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
    name, raw, expected = item
    api = api_of(expected)
    record = analyze(api, reads(raw, chunking, framing_of(expected)))
    check_against_expected(record, expected)
    assert chunking_free(record) == chunking_free(whole_record(name, raw, api))
    assert record.body_bytes == len(raw)
    assert record.ttfb_ns == 1000
    if "output_events" in expected:
        assert record.output_events == expected["output_events"]


def _check_any_split(streams: list[tuple[str, bytes, dict[str, Any]]]) -> None:
    @given(st.data())
    def check(data: st.DataObject) -> None:
        name, raw, expected = data.draw(st.sampled_from(streams))
        api = api_of(expected)
        record = analyze(api, at_cuts(raw, data.draw(cuts_for(raw))))
        assert chunking_free(record) == chunking_free(whole_record(name, raw, api))
        check_against_expected(record, expected)

    check()


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
        _check_any_split(load_llm_streams(corpus_dir))


@pytest.mark.corpus
@pytest.mark.usefixtures("corpus_dir")
class TestProviderStreams:
    """Every Gemini, Bedrock, Ollama, Cohere v2 and legacy completions recording is read exactly, in
    every chunking, and its framing units are the ones the corpus counted."""

    @pytest.mark.parametrize("chunking", ALL_CHUNKINGS)
    @pytest.mark.parametrize("item", PROVIDER_STREAMS)
    def test_stream(self, item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
        _check_stream(item, chunking)

    @pytest.mark.parametrize("item", PROVIDER_STREAMS)
    def test_framing_units(self, item: tuple[str, bytes, dict[str, Any]]) -> None:
        _, raw, expected = item
        framing = framing_of(expected)
        if framing == "sse":
            assert event_types(raw) == Counter(expected["sse_event_types"])
        elif framing == "aws_eventstream":
            assert eventstream_summary(raw) == {
                k: expected["eventstream"][k]
                for k in ("message_types", "event_types", "header_names", "crc_failures")
            }
        elif framing == "json_array":
            decoder = JSONArrayDecoder()
            items = [*decoder.feed(raw), *decoder.close()]
            elements = sum(isinstance(i, ElementReceived) for i in items)
            assert elements == expected["json_array"]["element_count"]
            assert decoder.closed == expected["json_array"]["closed"]
        else:
            ndjson = NDJSONDecoder()
            lines = [*ndjson.feed(raw), *ndjson.close()]
            assert len(lines) == expected["ndjson"]["line_count"]

    def test_index_lists_every_recording(self, corpus_dir: Any) -> None:
        rows = json.loads((corpus_dir / "provider-streams" / "index.json").read_text("utf-8"))
        listed = sorted(row["file"].removeprefix("provider-streams/") for row in rows)
        assert listed == sorted(
            name.removeprefix("provider-streams/")
            for name, _, _ in load_provider_streams(corpus_dir)
        )
        assert {row["protocol"] for row in rows} <= {a.value for a in Api}

    def test_hypothesis_splits(self, corpus_dir: Any) -> None:
        _check_any_split(load_provider_streams(corpus_dir))


class TestFixtureStreams:
    """Each project-owned stream yields its hand-written expectations in every chunking."""

    @pytest.mark.parametrize("chunking", ALL_CHUNKINGS)
    @pytest.mark.parametrize("item", OWN)
    def test_stream(self, item: tuple[str, bytes, dict[str, Any]], chunking: str) -> None:
        _check_stream(item, chunking)

    @pytest.mark.parametrize(
        "item",
        [p for p in OWN if framing_of(p.values[0][2]) == "sse"],  # type: ignore[index]
    )
    def test_sse_event_types(self, item: tuple[str, bytes, dict[str, Any]]) -> None:
        _, raw, expected = item
        assert event_types(raw) == Counter(expected["sse_event_types"])

    @given(st.data())
    def test_hypothesis_splits(self, data: st.DataObject) -> None:
        _, raw, expected = data.draw(st.sampled_from(fixture_streams()))
        record = analyze(api_of(expected), at_cuts(raw, data.draw(cuts_for(raw))))
        check_against_expected(record, expected)
        assert record.output_events == expected["output_events"]

    def test_generic_sse_clean_eof_is_not_truncated(self) -> None:
        record = analyze(Api.SSE, [b'data: {"candidates": [{"finishReason": "STOP"}]}\r\n\r\n'])
        assert record.outcome is Outcome.COMPLETED

    def test_every_fixture_file_has_expectations(self) -> None:
        assert sorted(p.name for p in FIXTURE_STREAMS.iterdir()) == sorted(FIXTURES)
