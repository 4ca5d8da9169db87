"""Which stream event becomes which metric observation, written once for every metrics exporter.

A metrics sink's per-request hooks are a subclass of :class:`RequestObservations`: this class
turns the port's hooks (``response``, ``events``, ``finish``) into observations in seconds (output
gaps in integer nanoseconds, a batch per read), and the subclass records each on its own
instruments (prometheus-client children, OpenTelemetry instruments). So Prometheus and OTLP count
the same streams from the same events, the same way:

* **live**, while the stream is open, so dashboards do not wait for it to end: TTFB, TTFT (and the
  model that answered), every output event and the gap before it (one batch per upstream read, so
  an instrument is updated once per read, not once per event), error frames, stall starts and ends,
  malformed and oversize frames, an analyzer fault;
* **at the end**, from the record: outcome, finish reasons, reported usage, tokens/s, duration,
  plus the request's status code and any upstream failure. Nothing counted live is counted again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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
)
from streamwatch.core.record import StreamRecord
from streamwatch.metricspec import NON_LLM_API, STAGE_ANALYZER, STAGE_MALFORMED, STAGE_OVERSIZE
from streamwatch.sinks import AnalysisStopped, Exchange, Hooks, SinkEvent


class RequestObservations(ABC):
    """One request's hooks for a metrics exporter; subclasses record the observations."""

    __slots__ = ("exchange", "streaming", "trace_id")

    def __init__(self, exchange: Exchange, trace_id: str | None) -> None:
        self.exchange = exchange
        self.trace_id = trace_id  # sampled trace: the exemplar of this request's observations
        self.streaming = False

    def hooks(self) -> Hooks:
        """The port's hooks bound to this request."""
        return Hooks(response=self.response, events=self.events, finish=self.finish)

    # -- the port's hooks ------------------------------------------------------------------------

    def response(self, status: int, api: Api | None) -> None:
        """Upstream answered; an analyzed event stream opens its stream series."""
        if api is not None:
            self.streaming = True
            self.stream_opened(api.value, self.exchange.request_model)

    def events(self, events: Sequence[SinkEvent]) -> None:
        """One read's live analyzer events, in order; its run of output events is recorded as one
        batch, flushed before any other event so observations keep the events' order."""
        if not self.streaming:
            return
        outputs = 0
        gaps: list[int] = []
        for event in events:
            if type(event) is OutputReceived:
                outputs += 1
                if event.gap_ns is not None:
                    gaps.append(event.gap_ns)
                continue
            if outputs:
                self.outputs(outputs, gaps)
                outputs, gaps = 0, []
            self._event(event)
        if outputs:
            self.outputs(outputs, gaps)

    def _event(self, event: SinkEvent) -> None:
        match event:
            case FirstTokenReceived(ttft_ns=ttft, model=model):
                if model and model != self.exchange.request_model:
                    self.model_answered(model)  # count the stream under the model that answered
                self.first_token(ttft / 1e9)
            case FirstByteReceived(ttfb_ns=ttfb):
                self.first_byte(ttfb / 1e9)
            case ErrorFrameReceived(error_type=error_type):
                self.error_frame(error_type)
            case StallStarted(phase=phase):
                self.stall_started(phase)
            case StallEnded():
                self.stall_ended()
            case MalformedFrameReceived():
                self.analysis_error(STAGE_MALFORMED)
            case OversizeEventDropped():
                self.analysis_error(STAGE_OVERSIZE)
            case AnalysisStopped():
                self.analysis_error(STAGE_ANALYZER)
            case _:
                pass

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        """The request ended: its status and upstream failure, then the stream's record. A request
        that got no status at all is counted by its upstream failure only, never as code ``0``:
        the proxy always answers one (its own 502/504/499 at worst), so only a probe that failed
        before a response has none (``streamwatch_probe_failures_total`` says why)."""
        ex = self.exchange
        if ex.upstream_retried:
            self.upstream_retried()
        if error_kind is not None:
            self.upstream_error(error_kind)
        api = record.api.value if record else (ex.api.value if ex.api else NON_LLM_API)
        if ex.status is not None:
            self.request_finished(api, ex.status)
        if self.streaming:
            self.streaming = False
            self.stream_closed(record)

    # -- the observations, in seconds --------------------------------------------------------------

    @abstractmethod
    def stream_opened(self, api: str, model: str | None) -> None:
        """An analyzed stream's headers arrived (active +1)."""

    @abstractmethod
    def model_answered(self, model: str) -> None:
        """The response named another model than the request: count the rest under it."""

    @abstractmethod
    def first_byte(self, seconds: float) -> None: ...

    @abstractmethod
    def first_token(self, seconds: float) -> None: ...

    @abstractmethod
    def outputs(self, count: int, gaps_ns: Sequence[int]) -> None:
        """``count`` consecutive output events of one read, and the gaps (ns) before those that had
        a previous one (all but a stream's first)."""

    @abstractmethod
    def error_frame(self, error_type: str) -> None: ...

    @abstractmethod
    def stall_started(self, phase: StallPhase) -> None: ...

    @abstractmethod
    def stall_ended(self) -> None: ...

    @abstractmethod
    def analysis_error(self, stage: str) -> None: ...

    @abstractmethod
    def upstream_error(self, kind: str) -> None: ...

    @abstractmethod
    def upstream_retried(self) -> None:
        """The request was sent again after a reused upstream connection closed unanswered."""

    @abstractmethod
    def request_finished(self, api: str, code: int) -> None: ...

    @abstractmethod
    def stream_closed(self, record: StreamRecord | None) -> None:
        """The stream ended (active -1, stalled -1 if stalled); ``record`` None: gauges only."""
