"""The canary daemon of ``streamwatch probe``: its own composition root, metrics and log line.

Each probe is reported to the same sinks the proxy uses (the metrics sink and the one log line
per stream), through the same :class:`~streamwatch.sinks.Sinks` port, so every per-stream family
means exactly what it means for real traffic; the route label is the target's name. The exposed
families carry ``source="probe"`` (added when ``/metrics`` is rendered), so a Prometheus that
scrapes both the proxy and the probe never mixes canary streams into real traffic, its SLOs or
its alerts. Probe verdicts add ``streamwatch_probe_success``, the last success time and a count
of probes per result.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TextIO

import httpx
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamwatch import metricspec as spec
from streamwatch.config import ConfigError, parse_listen
from streamwatch.core.side import Side
from streamwatch.export.logs import LogSink, configure_logging
from streamwatch.export.prometheus import Metrics
from streamwatch.export.prometheus_sink import PrometheusSink
from streamwatch.export.scrape import metrics_handler
from streamwatch.sinks import Exchange, Sinks
from streamwatch.tools.probe import ProbeResult, Target, probe_once

log = structlog.get_logger("streamwatch.probe")


class _WithSource(Collector):
    """Another registry's families with ``source="probe"`` added to every sample (no family of
    the proxy has a ``source`` label of its own, so no two series can collide)."""

    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterable[Metric]:
        for family in self._inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [
                s._replace(labels={**s.labels, spec.SOURCE: spec.PROBE_SOURCE})
                for s in family.samples
            ]
            yield out


class ProbeMetrics:
    """The probe's exposition: per-stream families (via the sinks) and the verdict families."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.streams = CollectorRegistry()
        self.exposed = CollectorRegistry()
        self.exposed.register(_WithSource(self.streams))
        names = [t.name for t in targets]
        # a canary is a client of what it probes: its series are client-side
        self.metrics = Metrics(self.streams, routes=dict.fromkeys(names, Side.CLIENT.value))
        self.success = Gauge(
            spec.PROBE_SUCCESS.name,
            spec.PROBE_SUCCESS.help,
            spec.PROBE_SUCCESS.labels,
            registry=self.exposed,
        )
        self.last_success = Gauge(
            spec.PROBE_LAST_SUCCESS.name,
            spec.PROBE_LAST_SUCCESS.help,
            spec.PROBE_LAST_SUCCESS.labels,
            registry=self.exposed,
        )
        self.probes = Counter(
            spec.PROBES.name, spec.PROBES.help, spec.PROBES.labels, registry=self.exposed
        )
        self.failures = Counter(
            spec.PROBE_FAILURES.name,
            spec.PROBE_FAILURES.help,
            spec.PROBE_FAILURES.labels,
            registry=self.exposed,
        )
        for name in names:  # every target's series exist from the start (rate() sees zeros)
            self.success.labels(name).set(0)
            for result in spec.PROBE_RESULTS:
                self.probes.labels(name, result)

    def record(self, result: ProbeResult) -> None:
        name = result.target.name
        self.success.labels(name).set(1 if result.ok else 0)
        self.probes.labels(name, spec.PROBE_PASSED if result.ok else spec.PROBE_FAILED).inc()
        failure = result.failure
        if failure is not None:
            self.failures.labels(name, failure).inc()
        if result.ok:
            self.last_success.labels(name).set(time.time())


def metrics_app(metrics: ProbeMetrics) -> web.Application:
    """The probe's ``/metrics``, rendered off the event loop as the proxy's is (the probes' timers
    and stream reads share this loop: a render on it would skew the TTFT and gaps they measure)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(metrics.exposed))
    return app


def _exchange(target: Target, t_request_ns: int) -> Exchange:
    return Exchange(
        request_id="probe-" + uuid.uuid4().hex[:16],
        route=target.name,
        method="POST",
        path=target.request_path,
        api=target.api,
        request_model=target.model,
        stream_requested=True,
        t_request_ns=t_request_ns,
        headers=CIMultiDictProxy(CIMultiDict()),  # never the probe's own (credential) headers
    )


def tell_sinks(sinks: Sinks, result: ProbeResult, t_request_ns: int) -> None:
    """Tell the sinks about one probe as the proxy tells them about one request."""
    exchange = _exchange(result.target, t_request_ns)
    fanout = sinks.open(exchange)
    if result.status is not None:
        exchange.status = result.status  # as the proxy's telemetry writes it, for requests_total
        fanout.response(result.status, result.record.api if result.record else None)
    if result.events:
        fanout.emit(result.events)
    # Failed before a response: counted as the proxy counts an upstream failure (by kind), and no
    # request status is invented for it (never requests_total{code="0"}).
    fanout.finish(result.record, result.failure if result.status is None else None)


async def _loop(
    client: httpx.AsyncClient,
    target: Target,
    sinks: Sinks,
    metrics: ProbeMetrics,
    environ: Mapping[str, str],
) -> None:
    while True:
        started = time.monotonic()
        t_request = time.monotonic_ns()
        result = await probe_once(client, target, environ)
        tell_sinks(sinks, result, t_request)
        metrics.record(result)
        log.info(
            "probe.passed" if result.ok else "probe.failed",
            target=target.name,
            reason=result.reason,
            failure=result.failure,
            status=result.status,
        )
        await asyncio.sleep(max(0.0, target.interval - (time.monotonic() - started)))


async def _serve(
    targets: Sequence[Target], listen: tuple[str, int], environ: Mapping[str, str]
) -> int:
    metrics = ProbeMetrics(targets)
    sinks = Sinks(sinks=(PrometheusSink(metrics.metrics), LogSink()))
    runner = web.AppRunner(metrics_app(metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, *listen)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            "listen", f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}"
        ) from None
    port = runner.addresses[0][1]
    log.info("probe.started", listen=f"{listen[0]}:{port}", targets=[t.name for t in targets])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with httpx.AsyncClient(http2=True) as client:
        tasks = [
            loop.create_task(_loop(client, t, sinks, metrics, environ), name=f"probe-{t.name}")
            for t in targets
        ]
        await stopping.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    log.info("probe.stopped")
    return 0


def run_daemon(
    targets: Sequence[Target], listen: str, environ: Mapping[str, str], err: TextIO
) -> int:
    """Probe until SIGTERM or SIGINT; exit 2 if the metrics listener cannot be bound."""
    configure_logging("auto", "info")
    try:
        address = parse_listen("listen", listen)
        return asyncio.run(_serve(targets, address, environ))
    except ConfigError as exc:
        print(f"streamwatch probe: {exc}", file=err)
        return 2
