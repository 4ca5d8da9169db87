"""Per-stream analyzer: bytes and timestamps in, live events and one final record out.

The proxy calls :meth:`StreamAnalyzer.feed` after writing each upstream read to the client,
:meth:`StreamAnalyzer.poll` from its watchdog to detect stalls while a stream hangs, and
:meth:`StreamAnalyzer.close` exactly once. Definitions (TTFB, TTFT, gap, stall, outcome) are those
of docs/architecture.md (Definitions); all times are the caller's monotonic nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamwatch.core import sse
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
    StreamEvent,
    TerminalFrameReceived,
    new_output,
)
from streamwatch.core.eventstream import BytesLeftOver, MessageCorrupt
from streamwatch.core.formats import FORMATS, FRAME_TYPE
from streamwatch.core.json_array import ArrayLeftOpen
from streamwatch.core.limits import MAX_CHOICES, MAX_ERROR_FRAMES, MAX_TOOL_CALLS
from streamwatch.core.protocols.base import OUTPUT, Facts, Frame, Reading, Verdict
from streamwatch.core.record import CloseCause, ErrorFrame, StallEpisode, StreamRecord, outcome_of
from streamwatch.core.sse import CommentReceived, TailDiscarded

NS_PER_S = 1_000_000_000

# Frame flags as plain ints: IntFlag's ``&`` and ``|`` build enum members in Python, which cost more
# than the rest of reading a typical delta.
_OUTPUT = Frame.OUTPUT.value
_TERMINAL = Frame.TERMINAL.value

# What a decoder's close reports when the body ended inside a frame (or an array never closed).
_TAILS = (TailDiscarded, ArrayLeftOpen, BytesLeftOver)
# Decoder items that are neither frames nor facts for the analyzer.
_IGNORED_ITEMS = (CommentReceived,)


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    """Thresholds and content policy shared by every stream of a proxy."""

    stall_threshold_ns: int = 10 * NS_PER_S
    """Silence between output events longer than this is a stall (default 10 s, docs/architecture.md)."""
    first_token_stall_threshold_ns: int = 60 * NS_PER_S
    """Before the first output event reasoning models think for long: a separate, larger threshold."""
    capture_content: bool = False
    """Keep completion text and tool arguments (off by default: no content in telemetry)."""
    capture_limit_chars: int = 4096
    """Cap on captured text when capture is on."""
    max_event_bytes: int = sse.MAX_EVENT_BYTES
    """One event larger than this is dropped unanalyzed (and still forwarded)."""
    max_error_frames: int = MAX_ERROR_FRAMES
    """Error frames kept in the record; every one is still reported live and counted."""
    max_choices: int = MAX_CHOICES
    """Choices (upstream-chosen indexes) whose finish reason is kept."""
    max_tool_calls: int = MAX_TOOL_CALLS
    """Tool calls tracked per stream."""


class StreamClosedError(Exception):
    """``feed`` or ``close`` after ``close``: a bug in the caller, never caused by remote input."""


class StreamAnalyzer:
    """Measures one streamed response in its API's framing (SSE, JSON array, AWS event stream,
    NDJSON). Never raises on remote input; any chunking gives the same result."""

    __slots__ = (
        "_announced",
        "_closed",
        "_config",
        "_decoder",
        "_error_frames",
        "_errors",
        "_first_output_index",
        "_frame_type",
        "_interpreter",
        "_malformed",
        "_note",
        "_oversize",
        "_reading",
        "_report_outputs",
        "_stall_phase",
        "_stall_since",
        "_stalls",
        "_tail",
        "api",
        "body_bytes",
        "frames",
        "max_gap_ns",
        "output_events",
        "request_model",
        "t_first_byte_ns",
        "t_first_output_ns",
        "t_last_output_ns",
        "t_request_ns",
    )

    def __init__(
        self,
        api: Api,
        t_request_ns: int,
        *,
        request_model: str | None = None,
        config: AnalyzerConfig | None = None,
        announced: tuple[tuple[str, int], ...] = (),
        report_outputs: bool = True,
    ) -> None:
        """``announced``: durations the response headers announced (:mod:`.announced`), kept in
        the record beside those the stream's own frames report. ``report_outputs=False``: no
        :class:`OutputReceived` per output event (nobody listens; the first output still gives
        :class:`FirstTokenReceived`, and the record counts them all)."""
        self._config = config or AnalyzerConfig()
        self._announced = announced
        self._report_outputs = report_outputs
        form = FORMATS[api]
        self._decoder = form.decoder(self._config.max_event_bytes)
        self._frame_type = FRAME_TYPE[form.framing]
        self._interpreter = form.interpreter()
        self._note = form.note
        config = self._config
        self._reading = Reading(
            capture_content=config.capture_content,
            capture_limit_chars=config.capture_limit_chars,
            max_choices=config.max_choices,
            max_tool_calls=config.max_tool_calls,
        )
        self._errors: list[ErrorFrame] = []  # the first max_error_frames
        self._error_frames = 0  # all of them
        self._malformed = 0
        self._stall_since: int | None = None
        self._stall_phase = StallPhase.BEFORE_FIRST_TOKEN
        self._stalls: list[StallEpisode] = []
        self._first_output_index: int | None = None
        self._oversize = 0
        self._tail = False
        self._closed = False
        self.api = api
        self.request_model = request_model
        self.t_request_ns = t_request_ns
        self.t_first_byte_ns: int | None = None
        self.t_first_output_ns: int | None = None
        self.t_last_output_ns: int | None = None
        self.max_gap_ns: int | None = None
        self.output_events = 0
        self.frames = 0
        self.body_bytes = 0

    # -- live view (watchdog, /debug/streams) --------------------------------------------------

    @property
    def model(self) -> str | None:
        """Response model as soon as the stream names it, else the request model."""
        return self._reading.model or self.request_model

    @property
    def response_id(self) -> str | None:
        return self._reading.response_id

    @property
    def stalled_since_ns(self) -> int | None:
        """When the current stall episode's silence began; None if the stream is not stalled."""
        return self._stall_since

    def silence_ns(self, now_ns: int) -> int:
        """Time since the last output event (or since the request, before the first one)."""
        return now_ns - self._silence_start()

    def _silence_start(self) -> int:
        last = self.t_last_output_ns
        return self.t_request_ns if last is None else last

    def _watching(self) -> bool:
        """Stalls are only possible while output is still owed (no terminal or error frame yet)."""
        return not self._closed and self._reading.terminal_frame is None and not self._error_frames

    def _threshold(self) -> tuple[int, StallPhase]:
        if self.t_first_output_ns is None:
            return self._config.first_token_stall_threshold_ns, StallPhase.BEFORE_FIRST_TOKEN
        return self._config.stall_threshold_ns, StallPhase.MID_STREAM

    def poll(self, now_ns: int) -> list[StreamEvent]:
        """Watchdog tick: a :class:`StallStarted` the first time silence passes the threshold."""
        if self._stall_since is not None or not self._watching():
            return []
        since = self._silence_start()
        threshold, phase = self._threshold()
        if now_ns - since <= threshold:
            return []
        self._stall_since, self._stall_phase = since, phase
        return [StallStarted(now_ns, since, phase)]

    def _settle_stall(self, at_ns: int, events: list[StreamEvent], *, ended: bool = True) -> None:
        """Output (or the end) arrived: end the open episode, or count one the watchdog missed."""
        if self._stall_since is None:
            if not self._watching():
                return
            since = self._silence_start()
            threshold, phase = self._threshold()
            if at_ns - since <= threshold:
                return
            events.append(StallStarted(at_ns, since, phase))
            self._stall_since, self._stall_phase = since, phase
        since, phase = self._stall_since, self._stall_phase
        events.append(StallEnded(at_ns, since, phase))
        self._stalls.append(StallEpisode(phase, since, at_ns if ended else None))
        self._stall_since = None

    # -- feeding -------------------------------------------------------------------------------

    def feed(self, chunk: bytes, at_ns: int) -> list[StreamEvent]:
        """Analyze one upstream read that has already been forwarded to the client."""
        if self._closed:
            raise StreamClosedError("feed after close")
        events: list[StreamEvent] = []
        if not chunk:
            return events
        if self.t_first_byte_ns is None:
            self.t_first_byte_ns = at_ns
            events.append(FirstByteReceived(at_ns, at_ns - self.t_request_ns))
        self.body_bytes += len(chunk)
        frame_type = self._frame_type
        for item in self._decoder.feed(chunk):
            if type(item) is frame_type:
                self._on_frame(item, at_ns, events)
            else:
                self._on_item(item, at_ns, events)
        return events

    def _on_frame(self, item: object, at_ns: int, events: list[StreamEvent]) -> None:
        index = self.frames
        self.frames = index + 1
        verdict = self._interpreter.read(item, index, self._reading)
        if verdict is OUTPUT:  # the usual delta: skip the general path's call and checks
            self._on_output(index, at_ns, events)
        elif verdict:
            self._apply(verdict, index, at_ns, events)

    def _on_item(self, item: object, at_ns: int, events: list[StreamEvent]) -> None:
        """A decoder item that is not a frame: a cap, a corrupt frame, an end, or a fact for the
        interpreter (Gemini's ignored lines and closing bracket)."""
        if type(item) is sse.OversizeEventDropped:
            self._oversize += 1
            events.append(OversizeEventDropped(at_ns, item.size))
        elif type(item) is MessageCorrupt:  # a framing unit that failed verification
            index = self.frames
            self.frames = index + 1
            self._malformed += 1
            events.append(MalformedFrameReceived(at_ns, index, item.reason))
        elif isinstance(item, _IGNORED_ITEMS):
            return
        elif self._note is not None:
            verdict = self._note(self._interpreter, item, self.frames, self._reading)
            if verdict:
                self._apply(verdict, self.frames, at_ns, events)

    def _apply(self, verdict: Verdict, index: int, at_ns: int, events: list[StreamEvent]) -> None:
        """Turn an interpreter's verdict on one frame (or fact) into live events: output first,
        then what was wrong with it, then the end."""
        if type(verdict) is Facts:
            frame, malformed, error = verdict.frame.value, verdict.malformed, verdict.error
        else:
            frame, malformed, error = verdict.value, None, None
        if frame & _OUTPUT:
            self._on_output(index, at_ns, events)
        if malformed is not None:
            self._malformed += 1
            events.append(MalformedFrameReceived(at_ns, index, malformed))
        if error is not None:
            self._error_frames += 1  # first: output is no longer owed, so no stall is inferred
            self._settle_stall(at_ns, events)
            if len(self._errors) < self._config.max_error_frames:
                self._errors.append(error)
            events.append(ErrorFrameReceived(at_ns, index, error.error_type, error.message))
        if frame & _TERMINAL:
            self._settle_stall(at_ns, events)
            terminal = self._reading.terminal_frame
            if terminal is not None:
                events.append(TerminalFrameReceived(at_ns, terminal))

    def _on_output(self, index: int, at_ns: int, events: list[StreamEvent]) -> None:
        last = self.t_last_output_ns
        # Fast path, the same verdict as _settle_stall: no open episode and a gap under the threshold.
        quiet = (
            self._stall_since is None
            and last is not None
            and at_ns - last <= self._config.stall_threshold_ns
        )
        if not quiet and self._watching():
            self._settle_stall(at_ns, events)
        self.output_events += 1
        self.t_last_output_ns = at_ns
        if last is None:
            self.t_first_output_ns = at_ns
            self._first_output_index = index
            events.append(FirstTokenReceived(at_ns, at_ns - self.t_request_ns, self.model))
            if self._report_outputs:
                events.append(new_output(OutputReceived, (at_ns, None)))
            return
        gap = at_ns - last
        if self.max_gap_ns is None or gap > self.max_gap_ns:
            self.max_gap_ns = gap
        if self._report_outputs:
            events.append(new_output(OutputReceived, (at_ns, gap)))

    # -- closing -------------------------------------------------------------------------------

    def close(self, at_ns: int, cause: CloseCause) -> tuple[list[StreamEvent], StreamRecord]:
        """End the stream (exactly once): final stall bookkeeping and the immutable record."""
        if self._closed:
            raise StreamClosedError("close after close")
        events: list[StreamEvent] = []
        frame_type = self._frame_type
        for item in self._decoder.close():
            if type(item) is frame_type:  # an NDJSON last line without its newline
                self._on_frame(item, at_ns, events)
            elif isinstance(item, _TAILS):
                self._tail = True
            else:
                self._on_item(item, at_ns, events)
        # A stall still open at the end is closed without an end time ("ended stalled"), whether or
        # not the watchdog had polled it yet, so the record never depends on the tick rate.
        self._settle_stall(at_ns, events, ended=False)
        self._closed = True
        return events, self._record(at_ns, cause)

    def _record(self, at_ns: int, cause: CloseCause) -> StreamRecord:
        reading = self._reading
        usage = reading.usage
        reported = usage.output_tokens if usage is not None else None
        output_tokens = self.output_events if reported is None else reported
        return StreamRecord(
            api=self.api,
            request_model=self.request_model,
            response_model=reading.model,
            response_id=reading.response_id,
            outcome=outcome_of(
                error_frames=self._error_frames,
                cause=cause,
                # Fed only after the write to the client: seen here means delivered. An
                # uninterpreted event stream has no terminal frame to wait for.
                terminal_delivered=None
                if self.api is Api.SSE
                else reading.terminal_frame is not None,
            ),
            close_cause=cause,
            t_request_ns=self.t_request_ns,
            t_end_ns=at_ns,
            ttfb_ns=None
            if self.t_first_byte_ns is None
            else self.t_first_byte_ns - self.t_request_ns,
            ttft_ns=(
                None
                if self.t_first_output_ns is None
                else self.t_first_output_ns - self.t_request_ns
            ),
            max_gap_ns=self.max_gap_ns,
            output_events=self.output_events,
            first_output_event_index=self._first_output_index,
            frames=self.frames,
            body_bytes=self.body_bytes,
            usage=usage,
            output_tokens=output_tokens,
            output_tokens_estimated=reported is None,
            tokens_per_second=self._tokens_per_second(output_tokens),
            finish_reasons=tuple(reading.finish_reasons[k] for k in sorted(reading.finish_reasons)),
            terminal_frame=reading.terminal_frame,
            error_frames=tuple(self._errors),
            stalls=tuple(self._stalls),
            malformed_frames=self._malformed,
            oversize_events=self._oversize,
            undispatched_tail=self._tail,
            text_chars=reading.text_chars,
            reasoning_chars=reading.reasoning_chars,
            refusal_chars=reading.refusal_chars,
            tool_calls=reading.tool_calls(),
            captured_text=reading.captured_text(),
            upstream_timings=(*self._announced, *reading.upstream_timings.items()),
        )

    def _tokens_per_second(self, output_tokens: int) -> float | None:
        """Decode rate ``(tokens - 1) / (t_last - t_first)``; needs two output events and tokens."""
        first, last = self.t_first_output_ns, self.t_last_output_ns
        if output_tokens < 2 or first is None or last is None or last <= first:
            return None
        return (output_tokens - 1) * NS_PER_S / (last - first)
