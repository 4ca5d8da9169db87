"""The composition root of ``streamwatch serve``: every sink, the proxy, both listeners, the
watchdog and the drain are built and wired here and nowhere else.

:func:`build_sinks` makes the sinks (Prometheus metrics, the log line, and the OpenTelemetry
tracer when ``OTEL_*`` asks for one) into one :class:`~streamwatch.sinks.Sinks`, which the proxy
reports to through the port's typed hooks; the proxy never imports a sink.

The proxy port is the relay (:mod:`streamwatch.proxy.downstream` and friends, ``docs/relay.md``):
asyncio protocols with llhttp on both sides, no aiohttp. aiohttp stays where it earns its place,
on the admin port, which serves ``/metrics`` (rendered off the event loop, :mod:`streamwatch.export.scrape`),
``/healthz``, ``/readyz`` and ``/debug/streams``, bound to loopback by default.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from streamwatch import __version__
from streamwatch.config import ConfigError, ListenError, Settings
from streamwatch.core import compiled
from streamwatch.export.log_pipe import LogPipe
from streamwatch.export.logs import LogSink
from streamwatch.export.otel import tracing_from_env
from streamwatch.export.otlp_metrics import otlp_metrics_from_env
from streamwatch.export.prometheus import Metrics
from streamwatch.export.prometheus_sink import PrometheusSink
from streamwatch.export.scrape import metrics_handler
from streamwatch.metricspec import CAPTURE_RESULTS
from streamwatch.proxy.downstream import ClientConnection
from streamwatch.proxy.listener import Listener, bind
from streamwatch.proxy.recorder import Recorder, RecorderLimits
from streamwatch.proxy.signals import handle_signals
from streamwatch.proxy.state import ProxyState
from streamwatch.sinks import Sink, Sinks

log = structlog.get_logger("streamwatch")

Closer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Readiness:
    """What ``/readyz`` answers besides the proxy's own state: ``leaving`` flips at SIGTERM, before
    the drain, so load balancers stop routing here while the listener still accepts."""

    leaving: bool = False


@dataclass(slots=True)
class Running:
    """A started streamwatch: its ports and the handles :func:`stop` needs."""

    proxy: ProxyState
    registry: CollectorRegistry
    listener: Listener
    admin_runner: web.AppRunner
    proxy_port: int
    admin_port: int
    watchdog: asyncio.Task[None]
    readiness: Readiness
    closers: list[Closer] = field(default_factory=list)


def _bound_port(site: web.BaseSite) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None) or ()
    for sock in sockets:
        return int(sock.getsockname()[1])
    raise RuntimeError("listener has no socket")


async def _bind(site: web.TCPSite, option: str) -> None:
    """Start a listener; an address that cannot be bound fails start-up naming the option."""
    try:
        await site.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        address = site.name.removeprefix("http://")
        raise ListenError(option, f"cannot listen on {address}: {reason}") from None


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (as nginx's ``worker_rlimit_nofile``): each stream
    holds two descriptors, and the default soft limit (often 1024) runs out first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _watchdog(proxy: ProxyState, interval: float, metrics: Metrics) -> None:
    """Live stall detection: poll every open stream so stalls are counted while they hang; end
    relays whose upstream went silent (``upstream_idle_timeout``) or whose client stopped reading
    (``downstream_write_timeout``). How late each tick wakes is the event loop's lag: time it spent
    on something else while every stream waited.

    Each tick also sets the open client connections gauge: a value set (not a function read at
    scrape time) is what ``--workers``' multiprocess files hold, so the parent sums every worker's.
    """
    while True:
        due = time.monotonic_ns() + int(interval * 1e9)
        await asyncio.sleep(interval)
        now = time.monotonic_ns()
        metrics.event_loop_lag.observe(max(0, now - due) / 1e9)
        metrics.client_connections.set(len(proxy.connections))
        for stream in tuple(proxy.streams.values()):
            stream.tap.poll(now)
        proxy.expire(now)


def _admin_app(
    proxy: ProxyState, registry: CollectorRegistry, readiness: Readiness
) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if readiness.leaving or proxy.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n")

    async def debug_streams(_: web.Request) -> web.Response:
        now = time.monotonic_ns()
        rows = []
        for live in tuple(proxy.streams.values()):
            analyzer = live.tap.analyzer
            ttft = analyzer.t_first_output_ns
            stalled = analyzer.stalled_since_ns
            rows.append(
                {
                    "request_id": live.request_id,
                    "route": live.route,
                    "api": analyzer.api.value,
                    "model": analyzer.model,
                    "age_s": round((now - analyzer.t_request_ns) / 1e9, 3),
                    "bytes": live.tap.body_bytes,
                    "output_events": analyzer.output_events,
                    "ttft_s": None
                    if ttft is None
                    else round((ttft - analyzer.t_request_ns) / 1e9, 3),
                    "silence_s": round(analyzer.silence_ns(now) / 1e9, 3),
                    "stalled": stalled is not None,
                    "stalled_for_s": None if stalled is None else round((now - stalled) / 1e9, 3),
                    "analysis_failed": live.tap.failed,
                }
            )
        return web.json_response({"version": 1, "streams": rows, "inflight": proxy.inflight})

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/debug/streams", debug_streams)
    return app


def _closer(close: Callable[[], None]) -> Closer:
    """A blocking close run off the event loop at exit."""

    async def run() -> None:
        await asyncio.to_thread(close)

    return run


def build_sinks(
    settings: Settings, environ: Mapping[str, str], metrics: Metrics
) -> tuple[Sinks, list[Closer]]:
    """Every sink of the process, and what must run at exit to flush them.

    Metrics go to ``metrics``' registry, and over OTLP too when ``OTEL_METRICS_EXPORTER`` asks; tracing is
    on only if ``environ`` (``OTEL_*``) asks for it. Raises
    :class:`~streamwatch.export.otel.TracingConfigError` naming a variable it cannot honour.
    """
    tracer, closers = tracing_from_env(environ, settings)
    goodput = settings.goodput()
    otlp, otlp_closers = otlp_metrics_from_env(environ, metrics.models, goodput)
    sinks: list[Sink] = [PrometheusSink(metrics, goodput), LogSink()]
    if otlp is not None:
        sinks.insert(1, otlp)
    return Sinks(sinks=tuple(sinks), tracer=tracer), [*closers, *otlp_closers]


def build_recorder(settings: Settings, metrics: Metrics) -> Recorder | None:
    """The ``--capture-dir`` writer, counting into ``metrics``; ``None`` when capture is off.
    Under ``--workers N`` each worker process keeps ``1/N`` of ``--capture-max-bytes``."""
    if settings.capture_dir is None:
        return None
    for result in CAPTURE_RESULTS:
        metrics.captures.labels(result)
    limits = RecorderLimits(
        max_stream_bytes=settings.capture_max_stream_bytes,
        max_total_bytes=settings.capture_max_bytes // settings.workers,
    )
    try:
        return Recorder(
            Path(settings.capture_dir),
            limits,
            keep_all=settings.capture_keep == "all",
            count=lambda result: metrics.captures.labels(result).inc(),
        )
    except OSError as exc:
        problem = f"cannot read {settings.capture_dir!r}: {exc.strerror or exc}"
        raise ConfigError("capture_dir", problem) from None


async def start(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    reuse_port: bool = False,
    log_pipe: LogPipe | None = None,
) -> Running:
    """Build every sink, start both listeners and the watchdog; returns once both ports accept
    connections. ``environ`` holds the ``OTEL_*`` variables (tracing is off without them);
    ``log_pipe``, the entry point's log writer, counts its dropped lines into the metrics."""
    registry = CollectorRegistry()
    metrics = Metrics(
        registry,
        model_allowlist=settings.model_allowlist,
        max_models=settings.max_models,
        routes={r.name: settings.side_of(r).value for r in settings.routes},
    )
    metrics.describe_routes(
        (r.name, settings.side_of(r).value, str(r.upstream.origin())) for r in settings.routes
    )
    if log_pipe is not None:
        log_pipe.count_drops(metrics.log_lines_dropped.inc)
    sinks, closers = build_sinks(settings, environ or {}, metrics)
    recorder = build_recorder(settings, metrics)
    if recorder is not None:
        closers.append(_closer(recorder.close))
    proxy = ProxyState(settings, sinks, recorder)
    _raise_fd_limit()
    readiness = Readiness()
    admin_runner = web.AppRunner(_admin_app(proxy, registry, readiness), access_log=None)
    host, port = settings.listen
    admin_host, admin_port = settings.admin_listen
    listener: Listener | None = None
    try:
        try:
            sock = bind(host, port, reuse_port=reuse_port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError("listen", f"cannot listen on {host}:{port}: {reason}") from None
        listener = Listener(sock, lambda: ClientConnection(proxy), sinks)
        await admin_runner.setup()
        admin_site = web.TCPSite(
            admin_runner, admin_host, admin_port, reuse_port=reuse_port or None
        )
        await _bind(admin_site, "admin_listen")
    except BaseException:
        # Release what did start (a bound listener, the sinks) so a failed start-up exits cleanly.
        await admin_runner.cleanup()
        if listener is not None:
            listener.close()
        proxy.close()
        for closer in closers:
            await closer()
        raise
    listener.start()
    watchdog = asyncio.get_running_loop().create_task(
        _watchdog(proxy, settings.watchdog_interval, metrics),
        name="streamwatch-watchdog",
    )
    running = Running(
        proxy=proxy,
        registry=registry,
        listener=listener,
        admin_runner=admin_runner,
        proxy_port=listener.port,
        admin_port=_bound_port(admin_site),
        watchdog=watchdog,
        readiness=readiness,
        closers=closers,
    )
    log.info(
        "streamwatch.started",
        version=__version__,
        core="compiled" if compiled() else "python",
        listen=f"{host}:{running.proxy_port}",
        admin=f"{admin_host}:{running.admin_port}",
        routes={r.name: r.prefix for r in settings.routes},
        upstreams=settings.upstream_urls(),
    )
    return running


async def stop(running: Running, drain_timeout: float) -> None:
    """Graceful stop: refuse new connections, let open streams finish until the deadline, then
    abort the rest (recorded as ``shutdown``), flush sinks.
    """
    proxy = running.proxy
    running.listener.close()  # new connections are refused
    proxy.start_drain()  # idle keep-alives close; busy ones close after their response
    with suppress(TimeoutError):
        await asyncio.wait_for(proxy.idle.wait(), drain_timeout)
    aborted = proxy.abort_all()
    running.watchdog.cancel()
    with suppress(asyncio.CancelledError):
        await running.watchdog
    await running.admin_runner.cleanup()
    proxy.close()
    for closer in running.closers:
        await closer()
    log.info("streamwatch.stopped", aborted_streams=aborted)


async def serve(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    reuse_port: bool = False,
    on_started: Callable[[Running], None] | None = None,
    log_pipe: LogPipe | None = None,
) -> int:
    """Run until SIGTERM, SIGINT or SIGQUIT, then drain; exit status 0. ``on_started`` runs once both
    listeners accept connections (a ``--workers`` worker reports readiness with it)."""
    running = await start(settings, environ, reuse_port=reuse_port, log_pipe=log_pipe)
    if on_started is not None:
        on_started(running)
    stopping = asyncio.Event()
    handle_signals(stopping)
    await stopping.wait()
    await leave(running, settings.shutdown_delay, stopping)
    log.info("streamwatch.draining", open_streams=len(running.proxy.exchanges))
    await stop(running, settings.drain_timeout)
    return 0


async def leave(running: Running, delay: float, signalled: asyncio.Event) -> None:
    """The first step of a shutdown, before :func:`stop`: ``/readyz`` answers 503 at once, then
    for ``delay`` seconds the proxy keeps accepting and serving as before, so requests routed here
    while the load balancer (Kubernetes endpoints, kube-proxy, an ingress) catches up still
    succeed instead of being refused. A second signal ends the wait early."""
    running.readiness.leaving = True
    log.info("streamwatch.leaving", shutdown_delay=delay, open_streams=len(running.proxy.exchanges))
    signalled.clear()
    with suppress(TimeoutError):
        await asyncio.wait_for(signalled.wait(), delay)
