"""A real OTLP/HTTP receiver for tests: POST /v1/traces and /v1/metrics, protobuf decoded as a
collector would.

Keeps every raw request body (to search the bytes on the wire for secrets), the decoded spans with
their resource attributes, and the latest data point of every metric stream (cumulative
temporality, the default: the latest export holds the totals).
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.harness import LOOPBACK


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def attributes_of(items: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(items)
    return {kv.key: value_of(kv.value) for kv in pairs}


@dataclass
class ReceivedSpan:
    """One exported span, decoded: ids as hex, attributes and event attributes as dicts."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    resource: dict[str, Any]

    def events_named(self, name: str) -> list[tuple[str, int, dict[str, Any]]]:
        return [event for event in self.events if event[0] == name]

    def strings(self) -> list[str]:
        """Every decoded string of the span (attributes, events, resource, name, status)."""
        out = [self.name, self.status_message]
        values: list[Any] = [*self.attributes.values(), *self.resource.values()]
        for _, _, attrs in self.events:
            values.extend(attrs.values())
        for value in values:
            out.extend(str(v) for v in (value if isinstance(value, tuple) else (value,)))
        return out


@dataclass(frozen=True)
class Point:
    """One metric data point: a sum's value, or a histogram's count and sum (and its kind)."""

    kind: str  # "sum", "gauge", "histogram" or "exponential_histogram"
    attributes: dict[str, Any]
    value: float = 0.0
    count: int = 0
    total: float = 0.0


@dataclass
class Receiver:
    port: int = 0
    bodies: list[bytes] = field(default_factory=list)
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_exports: int = 0
    # (metric name, sorted attributes) -> latest point
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], Point] = field(default_factory=dict)
    metric_resources: list[dict[str, Any]] = field(default_factory=list)

    def series(self, name: str, **attributes: Any) -> list[Point]:
        """The latest point of every stream of metric ``name`` whose attributes include these."""
        return [
            p
            for (n, _), p in self.points.items()
            if n == name and all(p.attributes.get(k) == v for k, v in attributes.items())
        ]

    def total(self, name: str, **attributes: Any) -> float:
        """A counter's value summed over the matching streams."""
        return sum(p.value for p in self.series(name, **attributes))

    def by(self, name: str, key: str) -> dict[Any, float]:
        """A counter's non-zero values summed by one attribute."""
        out: dict[Any, float] = {}
        for p in self.series(name):
            if p.value:
                out[p.attributes.get(key)] = out.get(p.attributes.get(key), 0.0) + p.value
        return out

    def histogram(self, name: str) -> tuple[int, float, set[str]]:
        """A histogram's count and sum over every stream, and the kinds of point seen."""
        points = self.series(name)
        return sum(p.count for p in points), sum(p.total for p in points), {p.kind for p in points}

    def add_metrics(self, body: bytes) -> None:
        self.bodies.append(body)
        self.metric_exports += 1
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for resource_metrics in request.resource_metrics:
            self.metric_resources.append(attributes_of(resource_metrics.resource.attributes))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for dp in getattr(metric, kind).data_points:
                        attrs = attributes_of(dp.attributes)
                        if kind in ("histogram", "exponential_histogram"):
                            point = Point(kind, attrs, count=dp.count, total=dp.sum)
                        else:
                            value = (
                                dp.as_double if dp.WhichOneof("value") == "as_double" else dp.as_int
                            )
                            point = Point(kind, attrs, value=float(value))
                        self.points[metric.name, tuple(sorted(attrs.items()))] = point

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def one(self, **attributes: Any) -> ReceivedSpan:
        """The single span whose attributes include ``attributes``."""
        found = [
            s for s in self.spans if all(s.attributes.get(k) == v for k, v in attributes.items())
        ]
        assert len(found) == 1, f"{len(found)} spans match {attributes}: {self.spans}"
        return found[0]

    def add(self, body: bytes) -> None:
        self.bodies.append(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = attributes_of(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(_decode(span, resource))


def _decode(span: Span, resource: dict[str, Any]) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=span.status.code,
        status_message=span.status.message,
        attributes=attributes_of(span.attributes),
        events=[(e.name, e.time_unix_nano, attributes_of(e.attributes)) for e in span.events],
        resource=resource,
    )


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    """Serve POST /v1/traces and /v1/metrics on an ephemeral loopback port."""
    receiver = Receiver()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers.get("Content-Type") == "application/x-protobuf"
        receiver.add(body)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def metrics(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers.get("Content-Type") == "application/x-protobuf"
        receiver.add_metrics(body)
        return web.Response(
            body=ExportMetricsServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    try:
        yield receiver
    finally:
        await runner.cleanup()
