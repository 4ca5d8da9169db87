"""OTLP metrics: the same observations as ``/metrics``, pushed with the OpenTelemetry SDK.

Off unless ``OTEL_METRICS_EXPORTER`` names ``otlp`` (or ``console``): Prometheus stays the default,
and both run side by side when asked. Everything else is the SDK's own standard configuration,
read from the environment by the SDK: ``OTEL_EXPORTER_OTLP[_METRICS]_ENDPOINT``, ``_HEADERS``,
``_TIMEOUT``, ``_COMPRESSION``, ``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (cumulative, delta, lowmemory) and
``OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION`` (``base2_exponential_bucket_histogram``
gives fine TTFT and gap resolution without choosing buckets; by default histograms use the spec's
buckets, the same as Prometheus). Values the SDK would only warn about fail start-up here.

Instruments come from :mod:`streamwatch.metricspec` (each family's ``otel`` name): the GenAI client
inference metrics under the conventions' current names (:data:`~streamwatch.metricspec.GENAI_CONVENTIONS`)
for the LLM APIs, and ``streamwatch.*`` instruments for our own families. Which event becomes
which observation is shared with Prometheus (:mod:`streamwatch.export.observations`), so both
count the same streams the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from streamwatch import __version__
from streamwatch import metricspec as spec
from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import Outcome, StreamRecord
from streamwatch.core.slo import MET, Goodput, verdict
from streamwatch.export import semconv as sc
from streamwatch.export.labels import ModelLabels, normalise_error_type, normalise_finish_reason
from streamwatch.export.observations import RequestObservations
from streamwatch.export.otel import TracingConfigError, otel_resource, otlp_exporter
from streamwatch.sinks import Exchange, Hooks

Closer = Callable[[], Awaitable[None]]
Attributes = dict[str, Any]

_TRUE = ("true", "1", "yes", "on")
_TEMPORALITIES = ("cumulative", "delta", "lowmemory")
_HISTOGRAMS = ("explicit_bucket_histogram", "base2_exponential_bucket_histogram")
#: ``gen_ai.token.modality`` of the usage counters: the stream usage streamwatch reads is totals,
#: which for the text APIs it interprets are text tokens; ``unknown`` when a stream reported none.
_MODALITY = "gen_ai.token.modality"


class _Instruments:
    """Every OTLP instrument, created once from the spec."""

    def __init__(self, meter: Meter) -> None:
        def counter(family: spec.Family) -> Counter:
            return meter.create_counter(family.otel, family.unit, family.help)

        def up_down(family: spec.Family) -> UpDownCounter:
            return meter.create_up_down_counter(family.otel, family.unit, family.help)

        def histogram(family: spec.Family) -> Histogram:
            return meter.create_histogram(
                family.otel,
                family.unit,
                family.help,
                explicit_bucket_boundaries_advisory=family.buckets,
            )

        self.requests = counter(spec.REQUESTS)
        self.streams = counter(spec.STREAMS)
        self.active = up_down(spec.STREAMS_ACTIVE)
        self.stalled = up_down(spec.STREAMS_STALLED)
        self.stalls = counter(spec.STALLS)
        self.ttfb = histogram(spec.TTFB)
        self.ttft = histogram(spec.TTFT)
        self.gap = histogram(spec.GAP)
        self.tokens_per_second = histogram(spec.TOKENS_PER_SECOND)
        self.duration = histogram(spec.DURATION)
        self.upstream_reported = histogram(spec.UPSTREAM_REPORTED)
        self.finish_reasons = counter(spec.FINISH_REASONS_TOTAL)
        self.error_frames = counter(spec.ERROR_FRAMES)
        self.output_events = counter(spec.OUTPUT_EVENTS)
        self.delivered = counter(spec.DELIVERED_OUTPUT_TOKENS)
        self.upstream_errors = counter(spec.UPSTREAM_ERRORS)
        self.upstream_retries = counter(spec.UPSTREAM_RETRIES)
        self.analysis_errors = counter(spec.ANALYSIS_ERRORS)
        self.slo_met = counter(spec.SLO_MET)
        self.slo_missed = counter(spec.SLO_MISSED)
        self.usage = {
            kind: meter.create_counter(name, "{token}", f"GenAI usage: {kind} tokens.")
            for kind, name in spec.GENAI_USAGE.items()
        }


def _attributes(**labels: str) -> Attributes:
    return {spec.otel_attribute(label): value for label, value in labels.items()}


class _OtlpRequest(RequestObservations):
    """One request's observations on the OTLP instruments. The model is bound as the Prometheus
    sink binds it (lazily, preferring the response's model, claiming a slot only on success), so
    a model has the same label value in both."""

    __slots__ = (
        "_api",
        "_bound",
        "_goodput",
        "_i",
        "_model_name",
        "_models",
        "_outputs",
        "_route_api",
        "_stalled",
        "_succeeded",
    )

    def __init__(
        self,
        instruments: _Instruments,
        models: ModelLabels,
        goodput: Goodput | None,
        exchange: Exchange,
        trace_id: str | None,
    ) -> None:
        super().__init__(exchange, trace_id)
        self._i = instruments
        self._models = models
        self._goodput = goodput
        self._stalled = False
        self._succeeded = False
        self._outputs = 0  # output events, added at the end: one SDK call per stream, not per event
        self._api = ""
        self._route_api: Attributes = {}
        self._model_name: str | None = None
        # (route, api, model) attributes and the GenAI ones (None for APIs that are not inference)
        self._bound: tuple[Attributes, Attributes | None] | None = None

    def response(self, status: int, api: Api | None) -> None:
        self._succeeded = 200 <= status < 300  # only a success may claim a model label slot
        super().response(status, api)

    def _model(self) -> tuple[Attributes, Attributes | None]:
        bound = self._bound
        if bound is None:
            label = self._models(self._model_name, claim=self._succeeded)
            per_model = {**self._route_api, spec.otel_attribute(spec.MODEL): label}
            provider = sc.PROVIDER_BY_API.get(Api(self._api))
            genai = None
            if provider is not None:
                genai = {
                    sc.GEN_AI_OPERATION_NAME: sc.OPERATION_CHAT,
                    sc.GEN_AI_PROVIDER_NAME: provider,
                    sc.GEN_AI_REQUEST_MODEL: self._models(self.exchange.request_model, claim=False),
                    sc.GEN_AI_RESPONSE_MODEL: label,
                    **self._route_api,
                }
            bound = self._bound = (per_model, genai)
        return bound

    def stream_opened(self, api: str, model: str | None) -> None:
        self._api = api
        self._route_api = _attributes(route=self.exchange.route, side=self.exchange.side, api=api)
        self._model_name = model
        self._i.active.add(1, self._route_api)

    def model_answered(self, model: str) -> None:
        if model != self._model_name:
            self._model_name = model
            self._bound = None

    def first_byte(self, seconds: float) -> None:
        self._i.ttfb.record(seconds, self._route_api)

    def first_token(self, seconds: float) -> None:
        genai = self._model()[1]
        if genai is not None:
            self._i.ttft.record(seconds, genai)

    def outputs(self, count: int, gaps_ns: Sequence[int]) -> None:
        self._outputs += count
        if gaps_ns:
            genai = (self._bound or self._model())[1]
            if genai is not None:
                for gap in gaps_ns:
                    self._i.gap.record(gap / 1e9, genai)

    def error_frame(self, error_type: str) -> None:
        attrs = {
            **self._route_api,
            spec.otel_attribute(spec.ERROR_TYPE): normalise_error_type(error_type),
        }
        self._i.error_frames.add(1, attrs)

    def stall_started(self, phase: StallPhase) -> None:
        self._i.stalls.add(1, {**self._route_api, **_attributes(phase=phase.value)})
        if not self._stalled:
            self._stalled = True
            self._i.stalled.add(1, self._route_api)

    def stall_ended(self) -> None:
        if self._stalled:
            self._stalled = False
            self._i.stalled.add(-1, self._route_api)

    def analysis_error(self, stage: str) -> None:
        self._i.analysis_errors.add(1, {**self._route_api, **_attributes(stage=stage)})

    def upstream_error(self, kind: str) -> None:
        value = kind if kind in spec.UPSTREAM_ERROR_KINDS else spec.OTHER
        route, side = self.exchange.route, self.exchange.side
        self._i.upstream_errors.add(1, _attributes(route=route, side=side, kind=value))

    def upstream_retried(self) -> None:
        route, side = self.exchange.route, self.exchange.side
        self._i.upstream_retries.add(1, _attributes(route=route, side=side))

    def request_finished(self, api: str, code: int) -> None:
        self._i.requests.add(
            1,
            {
                **_attributes(route=self.exchange.route, side=self.exchange.side, api=api),
                sc.HTTP_RESPONSE_STATUS_CODE: code,
            },
        )

    def stream_closed(self, record: StreamRecord | None) -> None:
        self.stall_ended()
        self._i.active.add(-1, self._route_api)
        if self._outputs:
            self._i.output_events.add(self._outputs, self._route_api)
        if record is None:
            return
        api = record.api.value
        if record.model:
            self.model_answered(record.model)
        per_model, genai = self._model()
        self._i.streams.add(1, {**per_model, **_attributes(outcome=record.outcome.value)})
        goodput = self._goodput
        objectives = None if goodput is None else goodput.objectives(self.exchange.route, record)
        if objectives is not None:
            judged = verdict(record, objectives)
            if judged == MET:
                self._i.slo_met.add(1, per_model)
            else:
                self._i.slo_missed.add(1, {**self._route_api, **_attributes(reason=judged)})
        for reason in record.finish_reasons:
            value = normalise_finish_reason(reason, api)
            self._i.finish_reasons.add(1, {**self._route_api, **_attributes(finish_reason=value)})
        usage = spec.USAGE_ESTIMATED if record.output_tokens_estimated else spec.USAGE_REPORTED
        self._i.delivered.add(record.output_tokens, {**self._route_api, **_attributes(usage=usage)})
        for name, ns in record.upstream_timings:
            timing = {**self._route_api, **_attributes(timing=name)}
            self._i.upstream_reported.record(ns / 1e9, timing)
        tps = record.tokens_per_second
        if tps is not None and tps >= 0 and tps != float("inf"):
            self._i.tokens_per_second.record(tps, per_model)
        if genai is None:
            return
        duration = max(0.0, record.duration_ns / 1e9)
        if record.outcome is Outcome.COMPLETED:
            self._i.duration.record(duration, genai)
        else:
            self._i.duration.record(duration, {**genai, sc.ERROR_TYPE: record.outcome.value})
        self._usage(record, genai)

    def _usage(self, record: StreamRecord, genai: Attributes) -> None:
        usage = record.usage
        if usage is None:  # the conventions: record 0 with modality unknown
            unknown = {**genai, _MODALITY: "unknown"}
            for kind in ("input", "output"):
                self._i.usage[kind].add(0, unknown)
            return
        text = {**genai, _MODALITY: "text"}
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("reasoning", usage.reasoning_tokens),
            ("cached_input", usage.cached_input_tokens),
            ("cache_write", usage.cache_creation_input_tokens),
        ):
            if count:
                self._i.usage[kind].add(count, text)


class OtlpMetricsSink:
    """Records every request's observations on OpenTelemetry instruments."""

    def __init__(self, meter: Meter, models: ModelLabels, goodput: Goodput | None) -> None:
        self._instruments = _Instruments(meter)
        self._models = models
        self._goodput = goodput

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        """This request's hooks."""
        return _OtlpRequest(
            self._instruments, self._models, self._goodput, exchange, trace_id
        ).hooks()


def _check(environ: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> None:
    value = environ.get(name)
    if value is not None and value.strip().lower() not in allowed:
        raise TracingConfigError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _otlp_exporter(environ: Mapping[str, str]) -> MetricExporter:
    exporter: MetricExporter = otlp_exporter(
        environ, "metrics", "metric_exporter", "OTLPMetricExporter"
    )
    return exporter


def metric_exporters(environ: Mapping[str, str]) -> list[MetricExporter]:
    """The exporters ``OTEL_METRICS_EXPORTER`` names; none unless it names one (the SDK's default
    is ``otlp``, streamwatch's is ``none``: Prometheus is the default) or when the SDK is disabled."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    _check(environ, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", _TEMPORALITIES)
    _check(environ, "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", _HISTOGRAMS)
    exporters: list[MetricExporter] = []
    for raw in environ.get("OTEL_METRICS_EXPORTER", "none").split(","):
        name = raw.strip().lower()
        if name == "otlp":
            exporters.append(_otlp_exporter(environ))
        elif name == "console":
            exporters.append(ConsoleMetricExporter())
        elif name not in ("none", "prometheus", ""):  # prometheus: the /metrics endpoint, always on
            raise TracingConfigError(
                f"OTEL_METRICS_EXPORTER: expected otlp, console, prometheus or none, got {raw.strip()!r}"
            )
    return exporters


def otlp_metrics_from_env(
    environ: Mapping[str, str], models: ModelLabels, goodput: Goodput | None
) -> tuple[OtlpMetricsSink | None, list[Closer]]:
    """The OTLP metrics sink and its closer (a final export, off the event loop), or nothing.

    ``models`` is the Prometheus sink's model bound, so a model keeps one label value everywhere.
    """
    exporters = metric_exporters(environ)
    if not exporters:
        return None, []
    readers = [PeriodicExportingMetricReader(exporter) for exporter in exporters]
    # Exemplars cost a context lookup per measurement (half of a record's CPU); they stay off
    # unless OTEL_METRICS_EXEMPLAR_FILTER asks for them (the SDK's default is trace_based).
    exemplars = None if "OTEL_METRICS_EXEMPLAR_FILTER" in environ else AlwaysOffExemplarFilter()
    resource = otel_resource()
    if "service.instance.id" not in resource.attributes:
        # Cumulative streams from two processes (pods, --workers) must not share an identity.
        resource = resource.merge(Resource({"service.instance.id": str(uuid.uuid4())}))
    provider = MeterProvider(metric_readers=readers, resource=resource, exemplar_filter=exemplars)
    sink = OtlpMetricsSink(provider.get_meter("streamwatch", __version__), models, goodput)

    async def shutdown() -> None:
        await asyncio.to_thread(provider.shutdown)

    return sink, [shutdown]
