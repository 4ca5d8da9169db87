"""The non-SSE framing decoders (JSON array, AWS event stream, NDJSON) and the SSE ignored-field
report: exact frames in any split, and hostile bytes never raise nor grow memory past the cap."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.eventstream import (
    BytesLeftOver,
    EventStreamDecoder,
    EventStreamMessage,
    MessageCorrupt,
)
from streamwatch.core.formats import Decoder
from streamwatch.core.json_array import (
    ArrayClosed,
    ArrayLeftOpen,
    ElementReceived,
    JSONArrayDecoder,
)
from streamwatch.core.ndjson import LineReceived, NDJSONDecoder
from streamwatch.core.record import CloseCause
from streamwatch.core.sse import MAX_EVENT_BYTES, FieldIgnored, OversizeEventDropped, SSEDecoder
from streamwatch.simulator.eventstream import event, exception
from tests.core.support import at_cuts, cuts_for, fixed

READ = 64 * 1024


def held(decoder: Any) -> int:
    """Bytes a decoder holds between reads (its only buffer)."""
    for name in ("_line", "_element", "_buffer"):
        if hasattr(decoder, name):
            return len(getattr(decoder, name))
    raise AssertionError(type(decoder))


def decode(
    make: Callable[..., Decoder], chunks: Iterable[bytes], cap: int = MAX_EVENT_BYTES
) -> list[Any]:
    """Feed the reads to a decoder capped at ``cap``, checking memory after each, then close;
    oversize sizes are blanked (they legitimately depend on where reads ended)."""
    decoder = make(max_event_bytes=cap)
    items: list[Any] = []
    for chunk in chunks:
        items.extend(decoder.feed(chunk))
        assert held(decoder) <= cap + len(chunk)
    items.extend(decoder.close())
    assert decoder.close() == []  # close reports once
    return [OversizeEventDropped(0) if isinstance(i, OversizeEventDropped) else i for i in items]


SMALL_CAP = 64  # so that random inputs cross the cap too
DECODERS: dict[str, Callable[..., Decoder]] = {
    "json_array": JSONArrayDecoder,
    "aws_eventstream": EventStreamDecoder,
    "ndjson": NDJSONDecoder,
}


class TestHostileBytes:
    """Any bytes in any split never raise, decode exactly as in one read, and stay under the cap."""

    @pytest.mark.parametrize("name", DECODERS)
    @given(raw=st.binary(max_size=400), data=st.data())
    @pytest.mark.parametrize("cap", [SMALL_CAP, MAX_EVENT_BYTES])
    def test_any_bytes_any_split(
        self, name: str, cap: int, raw: bytes, data: st.DataObject
    ) -> None:
        make = DECODERS[name]
        split = at_cuts(raw, data.draw(cuts_for(raw)))
        assert decode(make, split, cap) == decode(make, [raw], cap)

    @pytest.mark.parametrize("name", DECODERS)
    @given(raw=st.binary(max_size=200))
    def test_one_byte_reads(self, name: str, raw: bytes) -> None:
        make = DECODERS[name]
        assert decode(make, fixed(raw, 1), SMALL_CAP) == decode(make, [raw], SMALL_CAP)

    @given(
        parts=st.lists(
            st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"', b"\\", b"x", b" ", b"\n", b"1"]),
            max_size=80,
        ),
        data=st.data(),
    )
    def test_json_alphabet_any_split(self, parts: list[bytes], data: st.DataObject) -> None:
        raw = b"".join(parts)
        split = at_cuts(raw, data.draw(cuts_for(raw)))
        assert decode(JSONArrayDecoder, split, SMALL_CAP) == decode(
            JSONArrayDecoder, [raw], SMALL_CAP
        )

    @given(
        messages=st.lists(
            st.sampled_from(
                [
                    event("contentBlockDelta", {"delta": {"text": "hi"}}),
                    exception("throttlingException", "slow down"),
                    b"\x00\x00\x00\x10\x00\x00\x00\x00",  # a prelude with a wrong CRC
                    b"\xff" * 12,
                ]
            ),
            max_size=8,
        ),
        flips=st.lists(st.integers(0, 10_000), max_size=3),
        data=st.data(),
    )
    def test_damaged_event_streams_any_split(
        self, messages: list[bytes], flips: list[int], data: st.DataObject
    ) -> None:
        raw = bytearray(b"".join(messages))
        for flip in flips:
            if raw:
                raw[flip % len(raw)] ^= 0x40
        body = bytes(raw)
        chunks = at_cuts(body, data.draw(cuts_for(body)))
        for cap in (100, MAX_EVENT_BYTES):
            assert decode(EventStreamDecoder, chunks, cap) == decode(
                EventStreamDecoder, [body], cap
            )

    @pytest.mark.parametrize("api", [a for a in Api if a is not Api.SSE])
    @given(raw=st.binary(max_size=300), data=st.data())
    def test_every_analyzer_survives_any_bytes(
        self, api: Api, raw: bytes, data: st.DataObject
    ) -> None:
        records = []
        for chunks in ([raw], at_cuts(raw, data.draw(cuts_for(raw)))):
            analyzer = StreamAnalyzer(api, 0)
            for at, chunk in enumerate(chunks, start=1):
                analyzer.feed(chunk, at)
            records.append(analyzer.close(10**6, CloseCause.UPSTREAM_EOF)[1])
        assert records[0].frames == records[1].frames
        assert records[0].outcome == records[1].outcome


class TestJSONArray:
    """Elements are delivered when their closing brace arrives, whatever is nested inside them."""

    def test_elements_nesting_strings_and_escapes(self) -> None:
        body = b'[{"a": {"b": [1, 2]}, "c": "x}]\\"y"}\r\n,\r\n{"d": "\\\\"}\n]\n'
        assert decode(JSONArrayDecoder, fixed(body, 1)) == [
            ElementReceived(b'{"a": {"b": [1, 2]}, "c": "x}]\\"y"}'),
            ElementReceived(b'{"d": "\\\\"}'),
            ArrayClosed(),
        ]

    def test_element_is_delivered_before_the_next_comma(self) -> None:
        decoder = JSONArrayDecoder()
        assert decoder.feed(b'[{"a": 1}') == [ElementReceived(b'{"a": 1}')]

    def test_unclosed_array_is_reported_at_close(self) -> None:
        assert decode(JSONArrayDecoder, [b'[{"a": 1},\n{"b": ']) == [
            ElementReceived(b'{"a": 1}'),
            ArrayLeftOpen(len(b'{"b": ')),
        ]

    def test_bare_object_body_is_one_element(self) -> None:
        body = b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}'
        assert decode(JSONArrayDecoder, [body]) == [ElementReceived(body)]

    def test_oversize_element_is_dropped_and_scanning_goes_on(self) -> None:
        big = b'{"t": "' + b"x" * (2 * MAX_EVENT_BYTES) + b'"}'
        body = b"[" + big + b',{"after": 1}]'
        for cap, chunks in ((MAX_EVENT_BYTES, fixed(body, READ)), (SMALL_CAP, fixed(body, 7))):
            assert decode(JSONArrayDecoder, chunks, cap) == [
                OversizeEventDropped(0),
                ElementReceived(b'{"after": 1}'),
                ArrayClosed(),
            ]


def _message(headers: bytes, payload: bytes) -> bytes:
    total = 16 + len(headers) + len(payload)
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    return prelude + headers + payload + struct.pack(">I", zlib.crc32(prelude + headers + payload))


class TestEventStream:
    """Both CRCs are verified; a bad message is skipped by its length, a bad prelude stops decoding."""

    GOOD = event("messageStop", {"stopReason": "end_turn"})

    def test_messages_and_headers(self) -> None:
        items = decode(EventStreamDecoder, fixed(self.GOOD + self.GOOD, 3))
        assert len(items) == 2
        assert items[0].headers[":event-type"] == "messageStop"
        assert items[0].message_type == "event"
        assert items[0].payload == b'{"stopReason":"end_turn"}'

    def test_non_string_headers_are_skipped(self) -> None:
        headers = b"\x04flag\x00" + b"\x03num\x04" + b"\x00\x00\x00\x07" + b"\x02:t\x07\x00\x01x"
        [item] = decode(EventStreamDecoder, [_message(headers, b"{}")])
        assert item == EventStreamMessage({":t": "x"}, b"{}")

    def test_bad_message_crc_skips_only_that_message(self) -> None:
        bad = bytearray(self.GOOD)
        bad[-6] ^= 1  # a payload byte: the prelude still vouches for the length
        items = decode(EventStreamDecoder, [self.GOOD + bytes(bad) + self.GOOD])
        assert [type(i) for i in items] == [EventStreamMessage, MessageCorrupt, EventStreamMessage]
        assert items[1] == MessageCorrupt("message_crc")

    def test_malformed_headers_skip_only_that_message(self) -> None:
        bad = _message(b"\x05:type\x0b", b"{}")  # unknown header value type 11
        items = decode(EventStreamDecoder, [bad + self.GOOD])
        assert items == [MessageCorrupt("headers"), decode(EventStreamDecoder, [self.GOOD])[0]]

    def test_bad_prelude_stops_decoding_for_good(self) -> None:
        bad = bytearray(self.GOOD)
        bad[8] ^= 1  # the prelude CRC itself
        items = decode(EventStreamDecoder, [self.GOOD, bytes(bad), self.GOOD])
        assert items[:2] == [
            decode(EventStreamDecoder, [self.GOOD])[0],
            MessageCorrupt("prelude_crc"),
        ]
        assert items[2] == BytesLeftOver(2 * len(self.GOOD))
        assert len(items) == 3

    def test_impossible_lengths_stop_decoding(self) -> None:
        prelude = struct.pack(">II", 8, 0)
        items = decode(EventStreamDecoder, [prelude + struct.pack(">I", zlib.crc32(prelude))])
        assert items == [MessageCorrupt("length"), BytesLeftOver(12)]

    def test_oversize_message_is_skipped_without_buffering(self) -> None:
        big = event("contentBlockDelta", {"delta": {"text": "x" * (2 * MAX_EVENT_BYTES)}})
        items = decode(EventStreamDecoder, fixed(big + self.GOOD, READ))
        assert items == [OversizeEventDropped(0), decode(EventStreamDecoder, [self.GOOD])[0]]

    def test_body_cut_inside_a_message_is_left_over(self) -> None:
        items = decode(EventStreamDecoder, [self.GOOD + self.GOOD[:20]])
        assert items[1:] == [BytesLeftOver(20)]


class TestNDJSON:
    """Non-blank lines, LF or CRLF; a last line without its newline still counts."""

    def test_lines(self) -> None:
        body = b'{"a":1}\r\n\n  \n{"b":2}\n{"c":3}'
        assert decode(NDJSONDecoder, fixed(body, 2)) == [
            LineReceived(b'{"a":1}'),
            LineReceived(b'{"b":2}'),
            LineReceived(b'{"c":3}'),
        ]

    def test_oversize_line_is_dropped_and_decoding_resumes(self) -> None:
        body = b'{"a":1}\n' + b"x" * (2 * MAX_EVENT_BYTES) + b'\n{"b":2}\n'
        for chunks in (fixed(body, READ), [body]):
            assert decode(NDJSONDecoder, chunks) == [
                LineReceived(b'{"a":1}'),
                OversizeEventDropped(0),
                LineReceived(b'{"b":2}'),
            ]


class TestIgnoredFields:
    """Only when asked, the SSE decoder reports the lines WHATWG ignores (Gemini's bare errors)."""

    BODY = b'data: {"a": 1}\n\n{\n  "error": {"code": 499}\n}'

    def test_reported_when_asked_and_not_a_tail(self) -> None:
        decoder = SSEDecoder(report_ignored_fields=True)
        items = [*decoder.feed(self.BODY), *decoder.close()]
        assert [i.line for i in items if isinstance(i, FieldIgnored)] == [
            "{",
            '  "error": {"code": 499}',
            "}",
        ]
        assert not any(type(i).__name__ == "TailDiscarded" for i in items)

    def test_not_reported_by_default(self) -> None:
        decoder = SSEDecoder()
        items = [*decoder.feed(self.BODY), *decoder.close()]
        assert not any(isinstance(i, FieldIgnored) for i in items)


class TestLiveVerdicts:
    """The analyzer reports each new format's facts as they arrive, not only in the final record."""

    def test_gemini_bare_error_is_reported_when_its_brace_closes(self) -> None:
        analyzer = StreamAnalyzer(Api.GEMINI, 0)
        chunk = b'data: {"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "index": 0}]}\n\n'
        analyzer.feed(chunk, 1)
        assert analyzer.feed(b'{\n  "error": {"code": 429, "status": "RESOURCE_', 2) == []
        events = analyzer.feed(b'EXHAUSTED", "message": "quota"}\n}\n', 3)
        assert [(type(e).__name__, getattr(e, "error_type", None)) for e in events] == [
            ("ErrorFrameReceived", "RESOURCE_EXHAUSTED")
        ]
        _, record = analyzer.close(4, CloseCause.UPSTREAM_EOF)
        assert record.outcome.value == "error_frame"
        assert not record.undispatched_tail

    def test_corrupt_event_stream_message_is_a_malformed_frame(self) -> None:
        good = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
        bad = bytearray(good)
        bad[-6] ^= 1
        analyzer = StreamAnalyzer(Api.BEDROCK_CONVERSE, 0)
        events = analyzer.feed(good + bytes(bad) + good, 1)
        assert [type(e).__name__ for e in events] == [
            "FirstByteReceived",
            "FirstTokenReceived",
            "OutputReceived",
            "MalformedFrameReceived",
            "OutputReceived",
        ]
        _, record = analyzer.close(2, CloseCause.UPSTREAM_EOF)
        assert (record.frames, record.malformed_frames, record.output_events) == (3, 1, 2)
        assert record.outcome.value == "truncated"  # no messageStop + metadata

    @pytest.mark.parametrize(
        ("api", "body"),
        [
            (Api.OLLAMA_CHAT, b'{"model":"m","done":true,"done_reason":"stop","eval_count":-1}\n'),
            (
                Api.GEMINI,
                b'data: {"candidates":[{"finishReason":"STOP"}],'
                b'"usageMetadata":{"candidatesTokenCount":18446744073709551615}}\n\n',
            ),
            (
                Api.BEDROCK_CONVERSE,
                event("messageStop", {"stopReason": "end_turn"})
                + event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 2.5}}),
            ),
            (
                Api.COHERE_V2,
                b'event: message-end\ndata: {"type":"message-end","delta":{"finish_reason":'
                b'"COMPLETE","usage":{"tokens":{"input_tokens":"7","output_tokens":1}}}}\n\n',
            ),
        ],
    )
    def test_usage_out_of_range_is_not_believed(self, api: Api, body: bytes) -> None:
        analyzer = StreamAnalyzer(api, 0)
        analyzer.feed(body, 1)
        _, record = analyzer.close(2, CloseCause.UPSTREAM_EOF)
        assert record.usage is None
        assert record.malformed_frames == 1
        assert record.outcome.value == "completed"  # the terminal frame still counts
