"""The prometheus-client objects of every family in :mod:`streamwatch.metricspec`.

The metrics live on an injected :class:`~prometheus_client.CollectorRegistry`, never the global one.
Names, help, labels and buckets come from the spec table; this module builds them, knows which
series start at zero, and caches the label children of each (route, api) and (route, api, model),
so a stream binds to its children once and a per-chunk observation is one ``observe``/``inc``.
The per-request side is :mod:`streamwatch.export.prometheus_sink`.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.samples import Exemplar

from streamwatch import __version__
from streamwatch import metricspec as spec
from streamwatch.core.api import Api
from streamwatch.core.record import StreamRecord
from streamwatch.core.slo import MET, MISS_REASONS
from streamwatch.export.labels import ModelLabels, normalise_error_type, normalise_finish_reason


def _counter(family: spec.Family, registry: CollectorRegistry) -> Counter:
    return Counter(family.name, family.help, family.labels, registry=registry)


def _gauge(family: spec.Family, registry: CollectorRegistry) -> Gauge:
    return Gauge(
        family.name,
        family.help,
        family.labels,
        registry=registry,
        multiprocess_mode=family.multiprocess_mode,
    )


def _histogram(family: spec.Family, registry: CollectorRegistry) -> Histogram:
    return Histogram(
        family.name, family.help, family.labels, buckets=family.buckets, registry=registry
    )


def exemplar(trace_id: str | None) -> dict[str, str] | None:
    """The exemplar labels linking an observation to its trace, if it has a sampled one."""
    # OpenMetrics caps exemplar labels at 128 chars; a W3C trace id is 32 hex digits.
    if trace_id and len(trace_id) <= 64:
        return {"trace_id": trace_id}
    return None


class Metrics:
    """Every streamwatch metric, registered on ``registry``; one instance per process.

    ``routes`` maps the configured route names to their sides, so per-route counters start at
    zero.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        model_allowlist: Collection[str] = (),
        max_models: int = 50,
        routes: Mapping[str, str] | None = None,
        version: str = __version__,
    ) -> None:
        self.models = ModelLabels(model_allowlist, max_models)
        self.requests = _counter(spec.REQUESTS, registry)
        self.streams = _counter(spec.STREAMS, registry)
        self.streams_active = _gauge(spec.STREAMS_ACTIVE, registry)
        self.streams_stalled = _gauge(spec.STREAMS_STALLED, registry)
        self.stalls = _counter(spec.STALLS, registry)
        self.ttfb = _histogram(spec.TTFB, registry)
        self.ttft = _histogram(spec.TTFT, registry)
        self.gap = _histogram(spec.GAP, registry)
        self.tokens_per_second = _histogram(spec.TOKENS_PER_SECOND, registry)
        self.duration = _histogram(spec.DURATION, registry)
        self.upstream_reported = _histogram(spec.UPSTREAM_REPORTED, registry)
        self.finish_reasons = _counter(spec.FINISH_REASONS_TOTAL, registry)
        self.error_frames = _counter(spec.ERROR_FRAMES, registry)
        self.tokens = _counter(spec.TOKENS, registry)
        self.output_events = _counter(spec.OUTPUT_EVENTS, registry)
        self.delivered_output_tokens = _counter(spec.DELIVERED_OUTPUT_TOKENS, registry)
        self.upstream_errors = _counter(spec.UPSTREAM_ERRORS, registry)
        self.upstream_retries = _counter(spec.UPSTREAM_RETRIES, registry)
        self.analysis_errors = _counter(spec.ANALYSIS_ERRORS, registry)
        self.connections_refused = _counter(spec.CONNECTIONS_REFUSED, registry)
        for reason in spec.CONNECTION_REFUSAL_REASONS:
            self.connections_refused.labels(reason)
        self.build_info = _gauge(spec.BUILD_INFO, registry)
        self.slo_met = _counter(spec.SLO_MET, registry)
        self.slo_missed = _counter(spec.SLO_MISSED, registry)
        self.event_loop_lag = _histogram(spec.EVENT_LOOP_LAG, registry)
        self.client_connections = _gauge(spec.CLIENT_CONNECTIONS, registry)
        self.route_info = _gauge(spec.ROUTE_INFO, registry)
        self.captures = _counter(spec.CAPTURES, registry)
        self.log_lines_dropped = _counter(spec.LOG_LINES_DROPPED, registry)
        ProcessCollector(
            registry=registry
        )  # process_cpu_seconds_total, _resident_memory_bytes, fds
        self.build_info.labels(version).set(1)
        self._per_model: dict[tuple[str, str, str, str], ModelChildren] = {}
        self._per_route_api: dict[tuple[str, str, str], RouteApiChildren] = {}
        self._requests: dict[tuple[str, str, str, int], Counter] = {}
        for route, side in (routes or {spec.DEFAULT_ROUTE: spec.SIDES[0]}).items():
            self.prepare_route(route, side)

    def prepare_route(self, route: str, side: str) -> None:
        """Pre-initialise a route's per-route series at zero so ``rate()`` sees them."""
        for kind in spec.UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(route, side, kind)
        self.upstream_retries.labels(route, side)
        for api in Api:
            self.streams_active.labels(route, side, api.value)
            self.streams_stalled.labels(route, side, api.value)
            for stage in spec.ANALYSIS_STAGES:
                self.analysis_errors.labels(route, side, api.value, stage)

    def route_api(self, route: str, side: str, api: str) -> RouteApiChildren:
        """The cached label children of one (route, side, api); created on first use."""
        key = (route, str(side), str(api))
        found = self._per_route_api.get(key)
        if found is None:
            found = self._per_route_api[key] = RouteApiChildren(self, *key)
        return found

    def per_model(
        self, route: str, side: str, api: str, model: str | None, *, claim: bool = True
    ) -> ModelChildren:
        """The cached label children of one (route, side, api, model); created on first use.

        ``claim``: a model name not yet known may take a free ``model`` label slot.
        """
        key = (route, str(side), str(api), self.models(model, claim=claim))
        found = self._per_model.get(key)
        if found is None:
            found = self._per_model[key] = ModelChildren(self, *key)
        return found

    # -- per-request and per-route counters (not tied to a stream) --

    def describe_routes(self, routes: Iterable[tuple[str, str, str]]) -> None:
        """The info series of each configured (route, side, upstream origin)."""
        for route, side, upstream in routes:
            self.route_info.labels(route, side, upstream).set(1)

    def goodput(self, children: ModelChildren, verdict: str) -> None:
        """Count a stream judged against its objectives: ``met`` per model, else the reason per
        (route, side, api). The met series and every reason start at zero with the first judged
        stream."""
        c = children
        met = self.slo_met.labels(c.route, c.side, c.api, c.model)
        missed = {r: self.slo_missed.labels(c.route, c.side, c.api, r) for r in MISS_REASONS}
        (met if verdict == MET else missed[verdict]).inc()

    def request_finished(self, route: str, side: str, api: str, code: int) -> None:
        """Count a proxied request by the status code returned to the client (any request); its
        child is looked up once per label tuple (``labels()`` validates and locks on every call),
        and the cache holds no child prometheus-client does not keep anyway."""
        key = (route, side, api, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, side, str(api), str(code))
        child.inc()

    def upstream_error(self, route: str, side: str, kind: str) -> None:
        """Count an upstream failure before a response (connect, tls, timeout or protocol)."""
        self.upstream_errors.labels(
            route, side, kind if kind in spec.UPSTREAM_ERROR_KINDS else spec.OTHER
        ).inc()


class RouteApiChildren:
    """Label children of one (route, side, api): the families not sliced by model."""

    __slots__ = (
        "active",
        "analysis",
        "api",
        "delivered",
        "duration",
        "error_frames",
        "finish",
        "metrics",
        "output_events",
        "outputs_value",
        "route",
        "side",
        "stalled",
        "stalls",
        "tokens",
        "ttfb",
        "unlocked",
    )

    def __init__(self, metrics: Metrics, route: str, side: str, api: str) -> None:
        labels = (route, side, api)
        self.metrics = metrics
        self.route, self.side, self.api = labels
        self.ttfb = metrics.ttfb.labels(*labels)
        self.duration = metrics.duration.labels(*labels)
        self.output_events = metrics.output_events.labels(*labels)
        # Once per read: the child's value itself, past the per-call checks of ``Counter.inc``
        # (observable, non-negative, exemplar) that a count of output events never needs, and
        # past its lock when only the event loop writes it (see :func:`unlocked`).
        self.outputs_value = self.output_events._value
        self.unlocked = unlocked(self.outputs_value)
        self.active = metrics.streams_active.labels(*labels)
        self.stalled = metrics.streams_stalled.labels(*labels)
        self.stalls = {p: metrics.stalls.labels(*labels, p) for p in spec.STALL_PHASES}
        self.analysis = {
            s: metrics.analysis_errors.labels(*labels, s) for s in spec.ANALYSIS_STAGES
        }
        self.tokens = {t: metrics.tokens.labels(*labels, t) for t in spec.TOKEN_TYPES}
        self.delivered = {
            s: metrics.delivered_output_tokens.labels(*labels, s) for s in spec.USAGE_VALUES
        }
        # Known values at zero: the first length cut or overloaded_error of a (route, api) is
        # visible to rate() (a counter that appears at 1 is invisible to it).
        self.finish: dict[str, Counter] = {
            r: metrics.finish_reasons.labels(*labels, r)
            for r in spec.EXPECTED_FINISH_REASONS.get(api, ())
        }
        self.error_frames: dict[str, Counter] = {
            t: metrics.error_frames.labels(*labels, t)
            for t in spec.EXPECTED_ERROR_TYPES.get(api, ())
        }

    def finish_reason(self, value: str) -> None:
        label = normalise_finish_reason(value, self.api)
        child = self.finish.get(label)
        if child is None:
            child = self.finish[label] = self.metrics.finish_reasons.labels(
                self.route, self.side, self.api, label
            )
        child.inc()

    def record(self, record: StreamRecord, exemplar: dict[str, str] | None) -> None:
        """The end-of-stream families without a model label."""
        for reason in record.finish_reasons:
            self.finish_reason(reason)
        usage = record.usage
        if usage is not None:
            for kind, count in (
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
                ("reasoning", usage.reasoning_tokens),
                ("cached_input", usage.cached_input_tokens),
            ):
                if count:
                    self.tokens[kind].inc(count)
        usage_from = spec.USAGE_ESTIMATED if record.output_tokens_estimated else spec.USAGE_REPORTED
        self.delivered[usage_from].inc(record.output_tokens)
        self.duration.observe(max(0.0, record.duration_ns / 1e9), exemplar)
        for name, ns in record.upstream_timings:  # names from a fixed set: bounded series
            reported = self.metrics.upstream_reported.labels(self.route, self.side, self.api, name)
            reported.observe(ns / 1e9)

    def error_frame(self, error_type: str) -> None:
        label = normalise_error_type(error_type)
        child = self.error_frames.get(label)
        if child is None:
            child = self.error_frames[label] = self.metrics.error_frames.labels(
                self.route, self.side, self.api, label
            )
        child.inc()


@cache
def _bounds_ns(bounds: tuple[float, ...]) -> tuple[float, ...]:
    """Each bucket bound as the largest whole number of nanoseconds ``n`` with ``n / 1e9 <= bound``,
    so ``ns <= n`` decides exactly as ``observe(ns / 1e9)`` compares ``ns / 1e9 <= bound``."""
    out: list[float] = []
    for bound in bounds:
        if math.isinf(bound):
            out.append(bound)
            continue
        n = math.floor(bound * 1e9)
        while (n + 1) / 1e9 <= bound:
            n += 1
        while n / 1e9 > bound:
            n -= 1
        out.append(n)
    return tuple(out)


def unlocked(value: object) -> bool:
    """Whether a child's value may be added to without taking its lock.

    prometheus-client guards every in-process value with a mutex, for threads writing at once.
    The per-read children (output events, gap buckets and sum) are written only by hooks, which
    run on the event loop's thread; the scrape (a worker thread) only reads them, and reading a
    float attribute is atomic. So the loop adds to ``_value`` directly: three lock round trips
    per read saved; a sampled stream's read replaces its bucket's ``_exemplar`` the same way (one
    attribute store, which the scrape reads whole), a fourth. ``--workers``' values (mmap files,
    ``_multiprocess``) keep ``inc``, which also writes the file.
    """
    return not getattr(value, "_multiprocess", True)


#: ``Exemplar`` is a ``NamedTuple``: ``tuple.__new__`` builds the same instance as its generated
#: Python ``__new__`` does, without that call (a third of a sampled read's exemplar cost).
_new_exemplar = tuple.__new__


class BatchedHistogram:
    """Observes a batch of durations in integer nanoseconds on one histogram child with one update
    per bucket touched and one for the sum: prometheus-client's ``observe`` takes two locks and
    scans the bounds in Python per value, and with an exemplar validates it and reads the clock
    per value too. Buckets and count are those of observing each value in seconds; the sum adds
    the batch's exact total once; with an exemplar, each bucket touched keeps the last value that
    fell in it, as per-value ``observe`` leaves it, stamped with the batch's one clock read.
    """

    __slots__ = ("_bounds_ns", "_buckets", "_sum", "_unlocked")

    def __init__(self, child: Histogram) -> None:
        # prometheus-client's per-child values (0.26): the bucket counters, the sum and the bounds.
        self._buckets = child._buckets
        self._sum = child._sum
        self._bounds_ns = _bounds_ns(tuple(child._upper_bounds))
        self._unlocked = unlocked(self._sum)

    def observe_ns(self, values_ns: Sequence[int], exemplar: dict[str, str] | None = None) -> None:
        """``exemplar`` as :func:`exemplar` makes it (valid by construction: not checked again)."""
        bounds, buckets = self._bounds_ns, self._buckets
        if len(values_ns) == 1:  # the usual read: one output event
            value = values_ns[0]
            bucket = buckets[bisect_left(bounds, value)]
            seconds = value / 1e9
            if self._unlocked:
                bucket._value += 1
                self._sum._value += seconds
                if exemplar is not None:  # one attribute the scrape reads, as ``_value``
                    bucket._exemplar = _new_exemplar(Exemplar, (exemplar, seconds, time.time()))
                return
            bucket.inc(1)
            self._sum.inc(seconds)
            if exemplar is not None:
                bucket.set_exemplar(Exemplar(exemplar, seconds, time.time()))
            return
        counts: dict[int, int] = {}
        for value in values_ns:
            index = bisect_left(bounds, value)
            counts[index] = counts.get(index, 0) + 1
        unlocked = self._unlocked
        for index, count in counts.items():
            if unlocked:
                buckets[index]._value += count
            else:
                buckets[index].inc(count)
        if unlocked:
            self._sum._value += sum(values_ns) / 1e9
        else:
            self._sum.inc(sum(values_ns) / 1e9)
        if exemplar is not None:  # a sampled trace's read: the last value of each bucket touched
            now = time.time()
            last = {bisect_left(bounds, value): value for value in values_ns}
            for index, value in last.items():
                if unlocked:
                    buckets[index]._exemplar = _new_exemplar(Exemplar, (exemplar, value / 1e9, now))
                else:
                    buckets[index].set_exemplar(Exemplar(exemplar, value / 1e9, now))


class ModelChildren:
    """Label children of one (route, side, api, model), so hot-path observations skip
    ``labels()``."""

    __slots__ = ("api", "gaps", "model", "outcomes", "route", "side", "tps", "ttft")

    def __init__(self, metrics: Metrics, route: str, side: str, api: str, model: str) -> None:
        labels = (route, side, api, model)
        self.route, self.side, self.api, self.model = labels
        self.ttft = metrics.ttft.labels(*labels)
        self.gaps = BatchedHistogram(metrics.gap.labels(*labels))
        self.tps = metrics.tokens_per_second.labels(*labels)
        # Every outcome at zero with a combination's first stream, so rate(...{outcome="truncated"})
        # is 0, not absent.
        self.outcomes = {o: metrics.streams.labels(*labels, o) for o in spec.OUTCOMES}

    def record(self, record: StreamRecord, exemplar: dict[str, str] | None) -> None:
        """The end-of-stream families with a model label."""
        self.outcomes[record.outcome.value].inc()
        tps = record.tokens_per_second
        if tps is not None and math.isfinite(tps) and tps >= 0:
            self.tps.observe(tps, exemplar)
