"""The Prometheus metrics sink: each request's observations recorded on cached label children.

The instruments and their label children are in :mod:`streamwatch.export.prometheus`; which event
becomes which observation is in :mod:`streamwatch.export.observations`. What is left here is the
per-request state: the children the stream is bound to (so a per-chunk observation is one
``observe``/``inc`` with no label lookup), whether it is stalled, and its exemplar.

The ``model`` label prefers the response's model, and only a stream that succeeded (2xx) may claim
one of the ``--max-models`` slots: a request model that already has a label is bound at once; any
other waits for the first model-labelled observation (first token, or the end), by when the
response has named its own model, so an alias or an invented request name takes no slot.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import StreamRecord
from streamwatch.core.slo import Goodput, verdict
from streamwatch.export.observations import RequestObservations
from streamwatch.export.prometheus import Metrics, ModelChildren, RouteApiChildren, exemplar
from streamwatch.sinks import Exchange, Hooks


class _PrometheusRequest(RequestObservations):
    __slots__ = (
        "_exemplar",
        "_goodput",
        "_metrics",
        "_model",
        "_model_name",
        "_route_api",
        "_stalled",
        "_succeeded",
    )

    _route_api: RouteApiChildren

    def __init__(
        self,
        metrics: Metrics,
        goodput: Goodput | None,
        exchange: Exchange,
        trace_id: str | None,
    ) -> None:
        super().__init__(exchange, trace_id)
        self._metrics = metrics
        self._goodput = goodput
        self._exemplar = exemplar(trace_id)
        self._stalled = False
        self._succeeded = False
        self._model: ModelChildren | None = None
        self._model_name: str | None = None

    def response(self, status: int, api: Api | None) -> None:
        self._succeeded = 200 <= status < 300  # only a success may claim a model label slot
        super().response(status, api)

    def stream_opened(self, api: str, model: str | None) -> None:
        route, side = self.exchange.route, self.exchange.side
        self._route_api = self._metrics.route_api(route, side, api)
        self._model_name = model
        if self._metrics.models.admits(model):
            self._model = self._metrics.per_model(route, side, api, model)
        self._route_api.active.inc()

    def model_answered(self, model: str) -> None:
        if model != self._model_name:
            self._model_name = model
            self._model = None

    def _bound(self) -> ModelChildren:
        """The (route, api, model) children, bound to the best model known now."""
        children = self._model
        if children is None:
            ra = self._route_api
            children = self._model = self._metrics.per_model(
                ra.route, ra.side, ra.api, self._model_name, claim=self._succeeded
            )
        return children

    def first_byte(self, seconds: float) -> None:
        self._route_api.ttfb.observe(seconds, self._exemplar)

    def first_token(self, seconds: float) -> None:
        self._bound().ttft.observe(seconds, self._exemplar)

    def outputs(self, count: int, gaps_ns: Sequence[int]) -> None:
        route_api = self._route_api
        if route_api.unlocked:  # only the event loop writes it (prometheus.unlocked)
            route_api.outputs_value._value += count
        else:
            route_api.outputs_value.inc(count)
        if gaps_ns:
            (self._model or self._bound()).gaps.observe_ns(gaps_ns, self._exemplar)

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
        self._metrics.upstream_error(self.exchange.route, self.exchange.side, kind)

    def upstream_retried(self) -> None:
        self._metrics.upstream_retries.labels(self.exchange.route, self.exchange.side).inc()

    def request_finished(self, api: str, code: int) -> None:
        self._metrics.request_finished(self.exchange.route, self.exchange.side, api, code)

    def stream_closed(self, record: StreamRecord | None) -> None:
        self.stall_ended()
        self._route_api.active.dec()
        if record is None:
            return
        if record.model:
            self.model_answered(record.model)
        bound = self._bound()
        bound.record(record, self._exemplar)
        self._route_api.record(record, self._exemplar)
        goodput = self._goodput
        objectives = None if goodput is None else goodput.objectives(self.exchange.route, record)
        if objectives is not None:
            self._metrics.goodput(bound, verdict(record, objectives))


class PrometheusSink:
    """Counts every request and measures every analyzed stream, live, for ``/metrics``; streams
    with goodput objectives (their model's or their route's) are also judged against them."""

    def __init__(self, metrics: Metrics, goodput: Goodput | None = None) -> None:
        self.metrics = metrics
        self._goodput = goodput

    def connection_refused(self, reason: str) -> None:
        """A client connection refused before a request was read (``reason`` from the spec)."""
        self.metrics.connections_refused.labels(reason).inc()

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        """This request's hooks."""
        return _PrometheusRequest(self.metrics, self._goodput, exchange, trace_id).hooks()
