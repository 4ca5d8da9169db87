"""The Prometheus metrics sink: each request's observations recorded on cached label children.

The instruments and their label children are in :mod:`streamwatch.export.prometheus`; which event
becomes which observation is in :mod:`streamwatch.export.observations`. What is left here is the
per-request state: the children the stream is bound to (so a per-chunk observation is one
``observe``/``inc`` with no label lookup), whether it is stalled, and its exemplar.
"""

from __future__ import annotations

from streamwatch.core.events import StallPhase
from streamwatch.core.record import StreamRecord
from streamwatch.export.observations import RequestObservations
from streamwatch.export.prometheus import Metrics, ModelChildren, RouteApiChildren, exemplar
from streamwatch.sinks import Exchange, Hooks


class _PrometheusRequest(RequestObservations):
    __slots__ = ("_exemplar", "_metrics", "_model", "_route_api", "_stalled")

    _model: ModelChildren
    _route_api: RouteApiChildren

    def __init__(self, metrics: Metrics, exchange: Exchange, trace_id: str | None) -> None:
        super().__init__(exchange, trace_id)
        self._metrics = metrics
        self._exemplar = exemplar(trace_id)
        self._stalled = False

    def stream_opened(self, api: str, model: str | None) -> None:
        route = self.exchange.route
        self._route_api = self._metrics.route_api(route, api)
        self._model = self._metrics.per_model(route, api, model)
        self._route_api.active.inc()

    def model_answered(self, model: str) -> None:
        ra = self._route_api
        self._model = self._metrics.per_model(ra.route, ra.api, model)

    def first_byte(self, seconds: float) -> None:
        self._route_api.ttfb.observe(seconds, self._exemplar)

    def first_token(self, seconds: float) -> None:
        self._model.ttft.observe(seconds, self._exemplar)

    def output(self, gap_s: float | None) -> None:
        self._route_api.output_events.inc()
        if gap_s is not None:
            self._model.gap.observe(gap_s, self._exemplar)

    def error_frame(self, error_type: str) -> None:
        self._route_api.error_frame(error_type)

    def stall_started(self, phase: StallPhase) -> None:
        self._route_api.stalls[phase.value].inc()
        if not self._stalled:
            self._stalled = True
            self._route_api.stalled.inc()

    def stall_ended(self) -> None:
        if self._stalled:
            self._stalled = False
            self._route_api.stalled.dec()

    def analysis_error(self, stage: str) -> None:
        self._route_api.analysis[stage].inc()

    def upstream_error(self, kind: str) -> None:
        self._metrics.upstream_error(self.exchange.route, kind)

    def request_finished(self, api: str, code: int) -> None:
        self._metrics.request_finished(self.exchange.route, api, code)

    def stream_closed(self, record: StreamRecord | None) -> None:
        self.stall_ended()
        self._route_api.active.dec()
        if record is None:
            return
        if record.model and self._metrics.models(record.model) != self._model.model:
            self.model_answered(record.model)
        self._model.record(record, self._exemplar)
        self._route_api.record(record, self._exemplar)


class PrometheusSink:
    """Counts every request and measures every analyzed stream, live, for ``/metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        """This request's hooks."""
        return _PrometheusRequest(self.metrics, exchange, trace_id).hooks()
