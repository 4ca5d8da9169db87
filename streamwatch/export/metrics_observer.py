"""Feeds :mod:`streamwatch.export.prometheus` from the sink hooks of each request."""

from __future__ import annotations

from streamwatch.core.api import Api
from streamwatch.core.events import (
    ErrorFrameReceived,
    FirstByteReceived,
    FirstTokenReceived,
    MalformedFrameReceived,
    OutputReceived,
    OversizeEventDropped,
    StallEnded,
    StallStarted,
)
from streamwatch.core.record import StreamRecord
from streamwatch.export.prometheus import Metrics, StreamMetrics
from streamwatch.metricspec import NON_LLM_API
from streamwatch.sinks import AnalysisStopped, Exchange, Hooks, SinkEvent


class _MetricsWatcher:
    __slots__ = ("_exchange", "_metrics", "_stream", "_trace_id")

    def __init__(self, metrics: Metrics, exchange: Exchange, trace_id: str | None) -> None:
        self._metrics = metrics
        self._exchange = exchange
        self._trace_id = trace_id  # the exemplar of every observation of this request
        self._stream: StreamMetrics | None = None

    def response(self, status: int, api: Api | None) -> None:
        if api is not None:
            ex = self._exchange
            self._stream = self._metrics.open_stream(ex.route, api.value, ex.request_model)
            self._stream.trace_id = self._trace_id

    def event(self, event: SinkEvent) -> None:
        stream = self._stream
        if stream is None:
            return
        match event:
            case OutputReceived(gap_ns=gap):
                stream.on_output(None if gap is None else gap / 1e9)
            case FirstTokenReceived(ttft_ns=ttft, model=model):
                if model and model != self._exchange.request_model:
                    stream.set_model(model)  # count the stream under the model that answered
                stream.on_first_token(ttft / 1e9)
            case FirstByteReceived(ttfb_ns=ttfb):
                stream.on_first_byte(ttfb / 1e9)
            case ErrorFrameReceived(error_type=error_type):
                stream.on_error_frame(error_type)
            case StallStarted(phase=phase):
                stream.on_stall_started(phase)
            case StallEnded():
                stream.on_stall_ended()
            case MalformedFrameReceived():
                stream.on_malformed_frame()
            case OversizeEventDropped():
                stream.on_oversize_event()
            case AnalysisStopped():
                stream.on_analysis_failed()
            case _:
                pass

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        ex = self._exchange
        if error_kind is not None:
            self._metrics.upstream_error(ex.route, error_kind)
        api = record.api.value if record else (ex.api.value if ex.api else NON_LLM_API)
        self._metrics.request_finished(ex.route, api, ex.status or 0)
        if self._stream is not None:
            self._stream.close(record)


class MetricsSink:
    """Counts every request and measures every analyzed stream, live."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        watcher = _MetricsWatcher(self.metrics, exchange, trace_id)
        return Hooks(response=watcher.response, event=watcher.event, finish=watcher.finish)
