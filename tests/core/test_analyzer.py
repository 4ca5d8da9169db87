"""The analyzer's definitions (docs/architecture.md) on synthetic timestamps: timing, stalls, outcomes."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.core.analyzer import NS_PER_S, AnalyzerConfig, StreamAnalyzer, StreamClosedError
from streamwatch.core.api import Api
from streamwatch.core.events import (
    ErrorFrameReceived,
    FirstByteReceived,
    FirstTokenReceived,
    MalformedFrameReceived,
    OutputReceived,
    OversizeEventDropped,
    StallEnded,
    StallPhase,
    StallStarted,
    TerminalFrameReceived,
)
from streamwatch.core.record import CloseCause, Outcome, StallEpisode
from streamwatch.core.sse import MAX_EVENT_BYTES
from tests.core import oracle_sse
from tests.core.support import FIXTURE_STREAMS, chat_chunk

S = NS_PER_S
MS = S // 1000
T0 = 5_000 * S  # an arbitrary point on the caller's monotonic clock
DONE = b"data: [DONE]\n\n"


def at(seconds: float) -> int:
    """A timestamp ``seconds`` after the request."""
    return T0 + round(seconds * S)


def sse(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{head}data: {data}\n\n".encode()


def chat(content: str | None = None, *, finish: str | None = None, usage: Any = None) -> bytes:
    """One OpenAI chat chunk event carrying ``content`` (the shared builder)."""
    return chat_chunk(None if content is None else {"content": content}, finish, usage=usage)


ROLE = sse(
    {"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
)
ERROR = sse({"error": {"type": "server_error", "message": "boom"}})


def analyzer(config: AnalyzerConfig | None = None, api: Api = Api.OPENAI_CHAT) -> StreamAnalyzer:
    return StreamAnalyzer(api, T0, request_model="gpt-4o-requested", config=config)


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


class TestFirstByteAndFirstToken:
    """TTFB is request to first body byte; TTFT is request to the first output event, whatever came before."""

    def test_ttfb_then_ttft(self) -> None:
        a = analyzer()
        first = a.feed(b": keep-alive\n\n", at(0.1))
        assert first == [FirstByteReceived(at(0.1), 100 * MS)]
        assert of_type(a.feed(ROLE, at(0.2)), FirstTokenReceived) == []
        events = a.feed(chat("Hi"), at(0.35))
        (token,) = of_type(events, FirstTokenReceived)
        assert (token.at_ns, token.ttft_ns) == (at(0.35), 350 * MS)
        assert of_type(events, OutputReceived) == [OutputReceived(at(0.35), None)]
        _, record = a.close(at(1), CloseCause.UPSTREAM_EOF)
        assert (record.ttfb_ns, record.ttft_ns) == (100 * MS, 350 * MS)
        assert record.first_output_event_index == 1  # the comment dispatched nothing; ROLE is 0
        assert record.duration_ns == 1 * S

    def test_empty_read_is_not_a_first_byte(self) -> None:
        a = analyzer()
        assert a.feed(b"", at(0.1)) == []
        assert of_type(a.feed(b"d", at(0.2)), FirstByteReceived) == [
            FirstByteReceived(at(0.2), 200 * MS)
        ]
        assert of_type(a.feed(b"ata: x\n\n", at(0.3)), FirstByteReceived) == []

    def test_no_output_means_no_ttft_and_no_rate(self) -> None:
        a = analyzer()
        a.feed(ROLE + chat(finish="stop") + DONE, at(0.5))
        _, record = a.close(at(1), CloseCause.UPSTREAM_EOF)
        assert record.ttft_ns is None
        assert record.max_gap_ns is None
        assert record.tokens_per_second is None
        assert record.output_events == 0
        assert record.outcome is Outcome.COMPLETED

    def test_no_body_at_all(self) -> None:
        _, record = analyzer().close(at(3), CloseCause.UPSTREAM_EOF)
        assert (record.ttfb_ns, record.ttft_ns, record.body_bytes) == (None, None, 0)
        assert record.outcome is Outcome.TRUNCATED


class TestGaps:
    """A gap is the time between consecutive output events; events that arrive in the same read have gap 0."""

    def test_gaps_between_reads(self) -> None:
        a = analyzer()
        gaps = []
        for seconds, chunk in [(0.3, chat("a")), (0.5, chat("b")), (0.6, ROLE), (1.2, chat("c"))]:
            gaps += [e.gap_ns for e in of_type(a.feed(chunk, at(seconds)), OutputReceived)]
        assert gaps == [None, 200 * MS, 700 * MS]
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert record.max_gap_ns == 700 * MS

    def test_same_read_gives_gap_zero(self) -> None:
        a = analyzer()
        events = a.feed(chat("a") + chat("b") + chat("c"), at(0.4))
        assert [e.gap_ns for e in of_type(events, OutputReceived)] == [None, 0, 0]
        events = a.feed(chat("d"), at(0.9))
        assert [e.gap_ns for e in of_type(events, OutputReceived)] == [500 * MS]

    def test_event_split_across_reads_is_timed_at_its_completing_read(self) -> None:
        a = analyzer()
        raw = chat("a") + chat("b")
        half = len(chat("a")) + 5
        a.feed(raw[:half], at(1))
        events = a.feed(raw[half:], at(4))
        assert of_type(events, OutputReceived) == [OutputReceived(at(4), 3 * S)]


class TestUnreportedOutputs:
    """With ``report_outputs=False`` no per-output event is built; every other event and the
    record are as with it on."""

    def test_same_record_and_other_events_without_output_events(self) -> None:
        """Only the OutputReceived events differ between the two analyzers."""
        reads = [(0.3, ROLE + chat("a")), (0.5, chat("b") + chat("c")), (12.0, chat("d") + DONE)]
        runs = []
        for report in (True, False):
            a = StreamAnalyzer(Api.OPENAI_CHAT, T0, request_model="m", report_outputs=report)
            events = [e for s, chunk in reads for e in a.feed(chunk, at(s))]
            closing, record = a.close(at(13), CloseCause.UPSTREAM_EOF)
            runs.append((events + closing, record))
        (on, on_record), (off, off_record) = runs
        assert len(of_type(on, OutputReceived)) == 4
        assert off == [e for e in on if not isinstance(e, OutputReceived)]
        assert of_type(off, StallStarted)  # the 11.5 s silence is still a stall
        assert off_record == on_record


class TestTokensPerSecond:
    """Decode rate is (tokens - 1) / (t_last - t_first), tokens reported when present, else estimated."""

    def test_estimated_from_output_events(self) -> None:
        a = analyzer()
        for i, seconds in enumerate([1, 1.5, 2, 2.5, 3]):
            a.feed(chat(f"t{i}"), at(seconds))
        a.feed(DONE, at(3.1))
        _, record = a.close(at(3.2), CloseCause.UPSTREAM_EOF)
        assert (record.output_tokens, record.output_tokens_estimated) == (5, True)
        assert record.tokens_per_second == pytest.approx((5 - 1) / 2.0)

    def test_reported_usage_wins(self) -> None:
        a = analyzer()
        for i, seconds in enumerate([1, 2, 3]):
            a.feed(chat(f"t{i}"), at(seconds))
        usage = {"prompt_tokens": 7, "completion_tokens": 41, "total_tokens": 48}
        a.feed(chat(usage=usage) + DONE, at(3.5))
        _, record = a.close(at(4), CloseCause.UPSTREAM_EOF)
        assert (record.output_tokens, record.output_tokens_estimated) == (41, False)
        assert record.tokens_per_second == pytest.approx((41 - 1) / 2.0)

    @pytest.mark.parametrize(
        "reads",
        [[(1.0, chat("only"))], [(1.0, chat("a") + chat("b") + chat("c"))]],
        ids=["one", "same-read"],
    )
    def test_undefined_without_two_timed_events(self, reads: list[tuple[float, bytes]]) -> None:
        a = analyzer()
        for seconds, chunk in reads:
            a.feed(chunk, at(seconds))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert record.tokens_per_second is None


class TestStalls:
    """Silence past the threshold is one stall episode, seen live by poll() and never counted twice."""

    def test_before_first_token_uses_the_sixty_second_threshold(self) -> None:
        a = analyzer()
        a.feed(ROLE, at(1))  # a first byte is not output: silence still runs from the request
        assert a.poll(at(60)) == []
        assert a.stalled_since_ns is None
        assert a.poll(at(61)) == [StallStarted(at(61), T0, StallPhase.BEFORE_FIRST_TOKEN)]
        assert a.stalled_since_ns == T0
        assert a.silence_ns(at(70)) == 70 * S
        assert a.poll(at(62)) == []
        assert a.poll(at(75)) == []
        events = a.feed(chat("late"), at(80))
        assert events[0] == StallEnded(at(80), T0, StallPhase.BEFORE_FIRST_TOKEN)
        assert of_type(events, FirstTokenReceived)[0].ttft_ns == 80 * S
        assert a.stalled_since_ns is None
        a.feed(DONE, at(81))
        _, record = a.close(at(81), CloseCause.UPSTREAM_EOF)
        assert record.stalls == (StallEpisode(StallPhase.BEFORE_FIRST_TOKEN, T0, at(80)),)

    def test_mid_stream_uses_the_ten_second_threshold(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        a.feed(chat(finish=None), at(5))  # not output: does not reset the silence
        assert a.poll(at(11)) == []  # exactly the threshold is not a stall
        assert a.silence_ns(at(11)) == 10 * S
        assert a.poll(at(11.001)) == [StallStarted(at(11.001), at(1), StallPhase.MID_STREAM)]
        ended = a.feed(chat("b"), at(20))
        assert of_type(ended, StallEnded) == [StallEnded(at(20), at(1), StallPhase.MID_STREAM)]
        assert of_type(ended, OutputReceived) == [OutputReceived(at(20), 19 * S)]
        a.feed(chat("c"), at(25))
        assert a.poll(at(40)) == [StallStarted(at(40), at(25), StallPhase.MID_STREAM)]
        a.feed(chat("d") + DONE, at(41))
        _, record = a.close(at(42), CloseCause.UPSTREAM_EOF)
        assert record.stalls == (
            StallEpisode(StallPhase.MID_STREAM, at(1), at(20)),
            StallEpisode(StallPhase.MID_STREAM, at(25), at(41)),
        )

    def test_counted_once_however_often_polled(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        started = [e for tick in range(12, 200) for e in a.poll(at(tick))]
        assert started == [StallStarted(at(12), at(1), StallPhase.MID_STREAM)]
        a.feed(chat("b"), at(200))
        _, record = a.close(at(201), CloseCause.UPSTREAM_EOF)
        assert len(record.stalls) == 1

    def test_stall_missed_by_the_watchdog_is_counted_at_the_next_output(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        events = a.feed(chat("b"), at(15))
        assert events[:2] == [
            StallStarted(at(15), at(1), StallPhase.MID_STREAM),
            StallEnded(at(15), at(1), StallPhase.MID_STREAM),
        ]
        _, record = a.close(at(16), CloseCause.UPSTREAM_EOF)
        assert record.stalls == (StallEpisode(StallPhase.MID_STREAM, at(1), at(15)),)

    def test_stall_missed_by_the_watchdog_is_counted_at_close(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        events, record = a.close(at(30), CloseCause.UPSTREAM_TIMEOUT)
        assert of_type(events, StallStarted) == [StallStarted(at(30), at(1), StallPhase.MID_STREAM)]
        assert record.stalls == (StallEpisode(StallPhase.MID_STREAM, at(1), None),)

    def test_stream_ending_stalled_has_no_episode_end(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        a.poll(at(12))
        events, record = a.close(at(30), CloseCause.CLIENT_ABORT)
        assert of_type(events, StallEnded) == [StallEnded(at(30), at(1), StallPhase.MID_STREAM)]
        assert record.stalls == (StallEpisode(StallPhase.MID_STREAM, at(1), None),)

    def test_ending_stalled_is_recorded_the_same_with_or_without_a_watchdog_tick(self) -> None:
        records = []
        for tick in (True, False):
            a = analyzer()
            a.feed(chat("a"), at(1))
            if tick:
                a.poll(at(12))
            records.append(a.close(at(30), CloseCause.UPSTREAM_TIMEOUT)[1])
        assert records[0].stalls == records[1].stalls

    @pytest.mark.parametrize("end", [DONE, ERROR], ids=["terminal", "error-frame"])
    def test_no_stall_after_the_terminal_or_error_frame(self, end: bytes) -> None:
        a = analyzer()
        a.feed(chat("a") + end, at(1))
        assert a.poll(at(100)) == []
        assert a.stalled_since_ns is None
        a.feed(chat("late"), at(200))  # output after the end is not watched either
        assert a.poll(at(300)) == []
        events, record = a.close(at(400), CloseCause.UPSTREAM_EOF)
        assert of_type(events, StallStarted) == []
        assert record.stalls == ()

    def test_terminal_frame_ends_an_open_stall(self) -> None:
        a = analyzer()
        a.feed(chat("a"), at(1))
        a.poll(at(12))
        events = a.feed(DONE, at(20))
        assert events[0] == StallEnded(at(20), at(1), StallPhase.MID_STREAM)
        assert events[-1] == TerminalFrameReceived(at(20), "[DONE]")
        _, record = a.close(at(21), CloseCause.UPSTREAM_EOF)
        assert record.stalls == (StallEpisode(StallPhase.MID_STREAM, at(1), at(20)),)

    def test_no_poll_events_after_close(self) -> None:
        a = analyzer()
        a.close(at(1), CloseCause.UPSTREAM_EOF)
        assert a.poll(at(1000)) == []

    def test_thresholds_are_configurable(self) -> None:
        config = AnalyzerConfig(stall_threshold_ns=2 * S, first_token_stall_threshold_ns=5 * S)
        a = analyzer(config)
        assert a.poll(at(5.5)) == [StallStarted(at(5.5), T0, StallPhase.BEFORE_FIRST_TOKEN)]
        a.feed(chat("a"), at(6))
        assert a.poll(at(8.5)) == [StallStarted(at(8.5), at(6), StallPhase.MID_STREAM)]


class TestOutcomes:
    """One outcome: error frame > client abort > shutdown > timeout > reset > truncated > completed,
    and a stream whose terminal frame was delivered is completed whatever closes it after."""

    EXPECTED: ClassVar[
        dict[tuple[CloseCause, bool], Outcome]
    ] = {  # (cause, terminal frame delivered) -> outcome without an error frame
        # Once the terminal frame reached the client the verdict is settled, whatever ends after.
        (CloseCause.UPSTREAM_EOF, True): Outcome.COMPLETED,
        (CloseCause.UPSTREAM_EOF, False): Outcome.TRUNCATED,
        (CloseCause.UPSTREAM_RESET, True): Outcome.COMPLETED,
        (CloseCause.UPSTREAM_RESET, False): Outcome.UPSTREAM_RESET,
        (CloseCause.UPSTREAM_TIMEOUT, True): Outcome.COMPLETED,
        (CloseCause.UPSTREAM_TIMEOUT, False): Outcome.UPSTREAM_TIMEOUT,
        (CloseCause.SHUTDOWN, True): Outcome.COMPLETED,
        (CloseCause.SHUTDOWN, False): Outcome.SHUTDOWN,
        (CloseCause.CLIENT_ABORT, True): Outcome.COMPLETED,
        (CloseCause.CLIENT_ABORT, False): Outcome.CLIENT_ABORT,
    }

    @pytest.mark.parametrize("cause", list(CloseCause))
    @pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "no-terminal"])
    @pytest.mark.parametrize("error", [True, False], ids=["error-frame", "no-error"])
    def test_every_cause(self, cause: CloseCause, terminal: bool, error: bool) -> None:
        a = analyzer()
        a.feed(chat("a") + (ERROR if error else b"") + (DONE if terminal else b""), at(1))
        _, record = a.close(at(2), cause)
        expected = Outcome.ERROR_FRAME if error else self.EXPECTED[(cause, terminal)]
        assert record.outcome is expected
        assert record.close_cause is cause

    def test_every_cause_is_covered(self) -> None:
        assert {cause for cause, _ in self.EXPECTED} == set(CloseCause)

    def test_budget_cut_is_completed_not_truncated(self) -> None:
        a = analyzer()
        a.feed(chat("a") + chat(finish="length") + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.outcome, record.finish_reasons) == (Outcome.COMPLETED, ("length",))

    def test_error_frame_is_reported_live(self) -> None:
        a = analyzer()
        events = a.feed(chat("a") + ERROR, at(1))
        assert of_type(events, ErrorFrameReceived) == [
            ErrorFrameReceived(at(1), 1, "server_error", "boom")
        ]

    def test_error_message_is_capped(self) -> None:
        a = analyzer()
        a.feed(sse({"error": {"type": "x", "message": "m" * 10_000}}), at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert 0 < len(record.error_frames[0].message) <= 256


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "choices",
    "delta",
    "content",
    "usage",
    "error",
    "type",
    "model",
    "tool_calls",
    "index",
    "function",
    "arguments",
    "name",
    "response",
    "message",
    "content_block",
    "partial_json",
    "text",
    "thinking",
    "item",
    "finish_reason",
    "stop_reason",
    "output_tokens",
    "status",
]
EVENTS = [
    None,
    "error",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "ping",
    "response.created",
    "response.output_text.delta",
    "response.completed",
    "response.failed",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "x",
]
SHAPED = st.recursive(
    JSON,
    lambda inner: (
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5) | st.lists(inner, max_size=3)
    ),
    max_leaves=20,
)


class TestMalformedInput:
    """Payloads an interpreter cannot read are counted and reported, never raise and never stop analysis."""

    @pytest.mark.parametrize("api", [Api.OPENAI_CHAT, Api.OPENAI_RESPONSES, Api.ANTHROPIC_MESSAGES])
    def test_bad_json_is_counted_and_analysis_continues(self, api: Api) -> None:
        a = analyzer(api=api)
        name = {Api.OPENAI_RESPONSES: "response.output_text.delta", Api.ANTHROPIC_MESSAGES: "x"}
        bad = sse("{not json", name.get(api)) + sse("[1, 2]", name.get(api))
        events = a.feed(bad, at(1))
        assert [(e.event_index, e.reason) for e in of_type(events, MalformedFrameReceived)] == [
            (0, "json"),
            (1, "not_an_object"),
        ]
        good = {
            Api.OPENAI_CHAT: chat("ok") + DONE,
            Api.OPENAI_RESPONSES: sse(
                {"type": "response.output_text.delta", "delta": "ok"}, "response.output_text.delta"
            )
            + sse({"type": "response.completed", "response": {}}, "response.completed"),
            Api.ANTHROPIC_MESSAGES: sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "ok"},
                },
                "content_block_delta",
            )
            + sse({"type": "message_stop"}, "message_stop"),
        }[api]
        a.feed(good, at(2))
        _, record = a.close(at(3), CloseCause.UPSTREAM_EOF)
        assert (record.malformed_frames, record.text_chars, record.outcome) == (
            2,
            2,
            Outcome.COMPLETED,
        )

    @given(
        st.sampled_from([Api.OPENAI_CHAT, Api.OPENAI_RESPONSES, Api.ANTHROPIC_MESSAGES, Api.SSE]),
        st.lists(st.tuples(st.sampled_from(EVENTS), SHAPED), max_size=8),
    )
    def test_any_json_shape_never_raises(
        self, api: Api, frames: list[tuple[str | None, Any]]
    ) -> None:
        a = analyzer(api=api)
        body = b"".join(sse(json.dumps(payload), event) for event, payload in frames)
        a.feed(body, at(1))
        a.poll(at(100))
        _, record = a.close(at(200), CloseCause.UPSTREAM_EOF)
        assert record.frames == len(frames)
        assert record.malformed_frames <= len(frames)

    def test_oversize_event_is_dropped_and_counted(self) -> None:
        a = analyzer()
        events = a.feed(b"data: " + b"x" * MAX_EVENT_BYTES + b"\n\n" + chat("ok") + DONE, at(1))
        assert len(of_type(events, OversizeEventDropped)) == 1
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.oversize_events, record.frames, record.outcome) == (
            1,
            2,
            Outcome.COMPLETED,
        )


class TestLimits:
    """Every accumulator an upstream controls has a named cap the caller can set."""

    def test_event_cap_is_injectable(self) -> None:
        """A 400-byte event is dropped under a 256-byte cap; the next event is still read."""
        a = analyzer(AnalyzerConfig(max_event_bytes=256))
        events = a.feed(b"data: " + b"x" * 400 + b"\n\n" + chat("ok") + DONE, at(1))
        assert [e.size > 256 for e in of_type(events, OversizeEventDropped)] == [True]
        assert len(of_type(events, OutputReceived)) == 1

    def test_error_frames_kept_up_to_the_cap_all_reported_live(self) -> None:
        """Five error frames under a cap of two: five live events, two in the record, outcome error."""
        a = analyzer(AnalyzerConfig(max_error_frames=2))
        events = a.feed(ERROR * 5, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert len(of_type(events, ErrorFrameReceived)) == 5
        assert [e.event_index for e in record.error_frames] == [0, 1]
        assert record.outcome is Outcome.ERROR_FRAME

    def test_finish_reasons_keyed_by_upstream_index_are_capped(self) -> None:
        """An upstream inventing 100 choice indexes leaves at most ``max_choices`` finish reasons."""
        a = analyzer(AnalyzerConfig(max_choices=3))
        body = b"".join(
            sse({"model": "m", "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})
            for i in range(100)
        )
        a.feed(body + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert record.finish_reasons == ("stop", "stop", "stop")

    def test_tool_calls_are_capped(self) -> None:
        """An upstream inventing 50 tool calls leaves ``max_tool_calls`` of them in the record."""
        a = analyzer(AnalyzerConfig(max_tool_calls=4))
        calls = [
            {"index": i, "id": f"call_{i}", "function": {"name": "f", "arguments": "{}"}}
            for i in range(50)
        ]
        chunk = {"model": "m", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]}
        a.feed(sse(chunk) + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert [c.call_id for c in record.tool_calls] == ["call_0", "call_1", "call_2", "call_3"]

    def test_captured_tool_arguments_stop_at_the_capture_limit(self) -> None:
        """With capture on, a tool call's kept arguments stop at the capture limit; all are counted."""
        a = analyzer(AnalyzerConfig(capture_content=True, capture_limit_chars=10))
        fragments = ["abcdef", "ghijkl", "mnopqr"]
        body = b"".join(
            sse(
                {
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": f}}]},
                        }
                    ],
                }
            )
            for f in fragments
        )
        a.feed(body + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        (call,) = record.tool_calls
        assert (call.arguments, call.arguments_chars) == ("abcdefghij", 18)


class TestMisuse:
    """Calling the analyzer out of order is a bug in the caller: it raises, unlike remote input."""

    def test_feed_after_close_raises(self) -> None:
        """``feed`` after ``close`` raises StreamClosedError, even for an empty read."""
        a = analyzer()
        a.close(at(1), CloseCause.UPSTREAM_EOF)
        with pytest.raises(StreamClosedError):
            a.feed(chat("late"), at(2))
        with pytest.raises(StreamClosedError):
            a.feed(b"", at(2))

    def test_close_twice_raises(self) -> None:
        """A second ``close`` raises instead of producing a second record."""
        a = analyzer()
        a.close(at(1), CloseCause.UPSTREAM_EOF)
        with pytest.raises(StreamClosedError):
            a.close(at(2), CloseCause.UPSTREAM_EOF)


# -- every cut of a valid stream ------------------------------------------------------------------

CUT_STREAMS = {  # fixture -> (api, bytes that open the block ending the stream, outcome after it)
    "openai-chat-usage-tool-call.sse": (Api.OPENAI_CHAT, b"data: [DONE]", Outcome.COMPLETED),
    "openai-responses-text.sse": (
        Api.OPENAI_RESPONSES,
        b"event: response.completed",
        Outcome.COMPLETED,
    ),
    "openai-responses-incomplete.sse": (
        Api.OPENAI_RESPONSES,
        b"event: response.incomplete",
        Outcome.COMPLETED,
    ),
    "anthropic-thinking-tool-use.sse": (
        Api.ANTHROPIC_MESSAGES,
        b"event: message_stop",
        Outcome.COMPLETED,
    ),
    "anthropic-error-frame.sse": (Api.ANTHROPIC_MESSAGES, b"event: error", Outcome.ERROR_FRAME),
    "openai-chat-error-frame.sse": (Api.OPENAI_CHAT, b'data: {"error"', Outcome.ERROR_FRAME),
    "openai-responses-failed.sse": (
        Api.OPENAI_RESPONSES,
        b"event: response.failed",
        Outcome.ERROR_FRAME,
    ),
}


class TestEveryCut:
    """A valid stream cut at any byte before its end and closed at EOF is truncated, its tail reported."""

    @pytest.mark.parametrize("name", list(CUT_STREAMS))
    def test_every_cut(self, name: str) -> None:
        api, marker, final = CUT_STREAMS[name]
        raw = (FIXTURE_STREAMS / name).read_bytes()
        end = (
            raw.index(b"\n\n", raw.index(marker)) + 2
        )  # the blank line that dispatches the last frame
        for cut in range(len(raw) + 1):
            a = analyzer(api=api)
            a.feed(raw[:cut], at(1))
            _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
            assert record.outcome is (final if cut >= end else Outcome.TRUNCATED), cut
            assert record.undispatched_tail == (oracle_sse.parse(raw[:cut]).pending is not None), (
                cut
            )

    @pytest.mark.parametrize("name", list(CUT_STREAMS))
    def test_cut_inside_a_block_reports_the_tail(self, name: str) -> None:
        raw = (FIXTURE_STREAMS / name).read_bytes()
        api = CUT_STREAMS[name][0]
        for block_end in [i + 2 for i in range(len(raw) - 1) if raw[i : i + 2] == b"\n\n"]:
            cut = block_end - 3  # inside the last field line of the block
            a = analyzer(api=api)
            a.feed(raw[:cut], at(1))
            _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
            assert record.undispatched_tail, cut


def anthropic(payload: dict[str, Any]) -> bytes:
    return sse(payload, payload["type"])


def anthropic_text(text: str) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return anthropic({"type": "content_block_delta", "index": 0, "delta": delta})


MESSAGE_START = anthropic(
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude-x",
            "usage": {"input_tokens": 9, "output_tokens": 1},
        },
    }
)


def responses(payload: dict[str, Any]) -> bytes:
    return sse(payload, payload["type"])


def responses_completed(usage: Any) -> bytes:
    response = {"id": "resp_1", "model": "gpt-4o", "status": "completed", "usage": usage}
    return responses({"type": "response.completed", "response": response})


class TestReportedOutput:
    """Only a stream's final usage report is reported output; else output is estimated from events."""

    def test_anthropic_placeholder_is_not_a_report(self) -> None:
        """Cut before message_delta: message_start's output count (1) is replaced by the estimate."""
        a = analyzer(api=Api.ANTHROPIC_MESSAGES)
        a.feed(MESSAGE_START, at(0.5))
        for i, seconds in enumerate([1, 2, 3]):
            a.feed(anthropic_text(f"t{i}"), at(seconds))
        _, record = a.close(at(4), CloseCause.UPSTREAM_RESET)
        assert record.usage is not None
        assert (record.usage.input_tokens, record.usage.output_tokens) == (9, None)
        assert (record.output_tokens, record.output_tokens_estimated) == (3, True)
        assert record.tokens_per_second == pytest.approx((3 - 1) / 2.0)

    def test_anthropic_final_usage_is_reported(self) -> None:
        a = analyzer(api=Api.ANTHROPIC_MESSAGES)
        a.feed(MESSAGE_START + anthropic_text("a"), at(1))
        a.feed(anthropic_text("b"), at(2))
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 12},
        }
        a.feed(anthropic(delta) + anthropic({"type": "message_stop"}), at(2.5))
        _, record = a.close(at(3), CloseCause.UPSTREAM_EOF)
        assert (record.output_tokens, record.output_tokens_estimated) == (12, False)
        assert record.usage is not None
        assert record.usage.input_tokens == 9

    @pytest.mark.parametrize("api", [Api.OPENAI_CHAT, Api.ANTHROPIC_MESSAGES, Api.OPENAI_RESPONSES])
    def test_explicit_zero_is_never_replaced_by_an_estimate(self, api: Api) -> None:
        a = analyzer(api=api)
        body = {
            Api.OPENAI_CHAT: chat("a") + chat(usage={"completion_tokens": 0}) + DONE,
            Api.ANTHROPIC_MESSAGES: MESSAGE_START
            + anthropic_text("a")
            + anthropic({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 0}}),
            Api.OPENAI_RESPONSES: responses({"type": "response.output_text.delta", "delta": "a"})
            + responses_completed({"output_tokens": 0}),
        }[api]
        a.feed(body, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.output_events, record.output_tokens, record.output_tokens_estimated) == (
            1,
            0,
            False,
        )


OUT_OF_RANGE = [2**64 - 1, 2**31, -1, 1.5, "12", True]


class TestUsageOutOfRange:
    """A usage report with a count that is not an int in 0..2**31-1 is counted as malformed and ignored."""

    @pytest.mark.parametrize("value", OUT_OF_RANGE, ids=repr)
    @pytest.mark.parametrize("api", [Api.OPENAI_CHAT, Api.ANTHROPIC_MESSAGES, Api.OPENAI_RESPONSES])
    def test_ignored_and_counted(self, api: Api, value: object) -> None:
        a = analyzer(api=api)
        body = {
            Api.OPENAI_CHAT: chat("a")
            + chat(usage={"prompt_tokens": 3, "completion_tokens": value})
            + DONE,
            Api.ANTHROPIC_MESSAGES: anthropic_text("a")
            + anthropic({"type": "message_delta", "delta": {}, "usage": {"output_tokens": value}})
            + anthropic({"type": "message_stop"}),
            Api.OPENAI_RESPONSES: responses({"type": "response.output_text.delta", "delta": "a"})
            + responses_completed({"input_tokens": 3, "output_tokens": value}),
        }[api]
        events = a.feed(body, at(1))
        assert [e.reason for e in of_type(events, MalformedFrameReceived)] == ["usage_out_of_range"]
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert record.usage is None
        assert (record.output_tokens, record.output_tokens_estimated) == (1, True)
        assert (record.malformed_frames, record.outcome) == (1, Outcome.COMPLETED)

    def test_anthropic_placeholder_out_of_range_is_not_read(self) -> None:
        """The placeholder is never read, so even junk there costs nothing."""
        a = analyzer(api=Api.ANTHROPIC_MESSAGES)
        start = {
            "type": "message_start",
            "message": {"usage": {"input_tokens": 4, "output_tokens": -1}},
        }
        a.feed(anthropic(start) + anthropic_text("a"), at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_RESET)
        assert record.malformed_frames == 0
        assert record.usage is not None
        assert record.usage.input_tokens == 4

    def test_largest_count_is_believed(self) -> None:
        a = analyzer()
        a.feed(chat("a") + chat(usage={"completion_tokens": 2**31 - 1}) + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.output_tokens, record.malformed_frames) == (2**31 - 1, 0)


class TestDoneSentinel:
    """``data: [DONE]`` is the OpenAI family's known sentinel: never malformed, terminal only on chat."""

    def test_after_a_responses_stream(self) -> None:
        a = analyzer(api=Api.OPENAI_RESPONSES)
        events = a.feed(
            responses({"type": "response.output_text.delta", "delta": "a"})
            + responses_completed({"output_tokens": 1})
            + DONE,
            at(1),
        )
        assert of_type(events, MalformedFrameReceived) == []
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.malformed_frames, record.terminal_frame, record.outcome) == (
            0,
            "response.completed",
            Outcome.COMPLETED,
        )

    def test_does_not_end_a_responses_stream(self) -> None:
        a = analyzer(api=Api.OPENAI_RESPONSES)
        a.feed(responses({"type": "response.output_text.delta", "delta": "a"}) + DONE, at(1))
        _, record = a.close(at(2), CloseCause.UPSTREAM_EOF)
        assert (record.malformed_frames, record.outcome) == (0, Outcome.TRUNCATED)
