"""What OpenTelemetry costs streamwatch: CPU per proxied output event with tracing off, on (100 %
sampled, batched OTLP/HTTP export to a local receiver) and on but sampling nothing (propagation
only); with ``--metrics``, OTLP metrics off and on (Prometheus is on in both; 1 s export interval,
so the export's cost is in every round).

    .venv/bin/python benchmarks/bench_tracing.py            # ~20 s
    .venv/bin/python benchmarks/bench_tracing.py --streams 400 --tokens 400 --rounds 5
    .venv/bin/python benchmarks/bench_tracing.py --metrics
    .venv/bin/python benchmarks/bench_tracing.py --instructions [--metrics] [--repo /path/to/other/checkout]

``--instructions`` is the stable measure on a busy box: instructions counted by callgrind (every
thread, the span processor's too) per stream of 20 and of 200 output events, tracing off and on,
replayed in one process through the proxy's ``Telemetry`` seam into the sinks ``serve`` builds
(Prometheus, the log line and, on, the tracer with its ``BatchSpanProcessor``), spans encoded as
OTLP protobuf by the exporter's own encoder and dropped instead of posted. Start-up cancels out:
each figure is the difference between runs of 4 and 4 + ``--passes`` streams.

``streamwatch serve`` runs as a subprocess (pinned to CPU 0 when there are two); the simulator
upstream, the load client and the OTLP receiver share this process (CPU 1). Only the streamwatch
process's CPU time (user + system, from psutil) is counted, over identical traffic, with the
variants interleaved round by round so drift hits all alike. One output event is one SSE event
written by the simulator in its own write (TCP_NODELAY), i.e. one proxied chunk as far as the
simulator can make it so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import callgrind
import psutil
from aiohttp import web

from streamwatch.simulator.profile import Profile
from streamwatch.simulator.server import start_simulator

LOOPBACK = "127.0.0.1"
VARIANTS: dict[str, dict[str, str]] = {
    "off": {},
    "on (always_on)": {"OTEL_TRACES_SAMPLER": "always_on"},
    "on (always_off)": {"OTEL_TRACES_SAMPLER": "always_off"},
}
METRICS_VARIANTS: dict[str, dict[str, str]] = {
    "off": {},
    "on (OTLP metrics, 1 s interval)": {
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    },
}


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A minimal OTLP/HTTP endpoint: accepts POST /v1/traces and /v1/metrics, keeps the bodies."""
    received: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}", received
    finally:
        await runner.cleanup()


class Serve:
    """A ``streamwatch serve`` subprocess; its stderr is drained so logging never blocks it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0
        self.started = asyncio.get_running_loop().create_future()
        self.drain = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            if not self.started.done() and b"streamwatch.started" in raw:
                line = json.loads(raw)
                self.started.set_result(int(line["listen"].rpartition(":")[2]))

    async def stop(self) -> None:
        self.proc.terminate()
        await self.proc.wait()
        await self.drain


async def serve(
    upstream: str,
    env: dict[str, str],
    *,
    wrapper: Sequence[str] = (),
    flags: Sequence[str] = (),
    start_timeout: float = 20,
) -> Serve:
    """``streamwatch serve`` with ``env`` and ``flags`` added, run under ``wrapper`` (e.g.
    callgrind, which needs a longer ``start_timeout``)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "STREAMWATCH_"))}
    proc = await asyncio.create_subprocess_exec(
        *wrapper, sys.executable, "-m", "streamwatch", "serve", "--upstream", upstream,
        "--listen", f"{LOOPBACK}:0", "--admin-listen", f"{LOOPBACK}:0", "--log-format", "json",
        *flags,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env={**base, **env},
    )  # fmt: skip
    running = Serve(proc)
    running.port = await asyncio.wait_for(running.started, start_timeout)
    if len(os.sched_getaffinity(0)) >= 2:
        psutil.Process(proc.pid).cpu_affinity([0])
    return running


async def load(port: int, streams: int, tokens: int, concurrency: int) -> int:
    """Run ``streams`` streams of ``tokens`` output events; returns the bytes received."""
    headers = {
        "x-sim-scenario": "normal", "x-sim-tokens": str(tokens), "x-sim-ttft-ms": "0",
        "x-sim-gap-ms": "0", "x-sim-jitter-ms": "0",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }  # fmt: skip
    payload = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    url = f"http://{LOOPBACK}:{port}/v1/chat/completions"
    left = list(range(streams))
    total = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal total
        while left:
            left.pop()
            async with session.post(url, json=payload, headers=headers) as response:
                total += len(await response.read())

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return total


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def main(args: argparse.Namespace) -> None:
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {1})
    profile = Profile(weights={"normal": 1.0}, seed=1, ttft_s=0.0, gap_mean_s=0.0, gap_jitter_s=0.0)
    runner, sim_port = await start_simulator(LOOPBACK, 0, profile)
    variants = METRICS_VARIANTS if args.metrics else VARIANTS
    per_event: dict[str, list[float]] = {name: [] for name in variants}
    try:
        async with receiver() as (endpoint, received):
            procs = {
                name: await serve(
                    f"http://{LOOPBACK}:{sim_port}",
                    {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **env} if env else {},
                )
                for name, env in variants.items()
            }
            try:
                for proc in procs.values():  # warm-up: imports, pools, JIT-free but cache-warm
                    await load(proc.port, 50, args.tokens, args.concurrency)
                for _ in range(args.rounds):
                    for name, proc in procs.items():
                        pid = proc.proc.pid
                        before = cpu_seconds(pid)
                        await load(proc.port, args.streams, args.tokens, args.concurrency)
                        await asyncio.sleep(0.3)  # let the batch exporter's work land in the round
                        spent = cpu_seconds(pid) - before
                        per_event[name].append(spent / (args.streams * args.tokens) * 1e6)
            finally:
                for proc in procs.values():
                    await proc.stop()
            exported = sum(map(len, received))
    finally:
        await runner.cleanup()
    base = statistics.median(per_event["off"])
    print(
        f"\n{args.rounds} rounds x {args.streams} streams x {args.tokens} output events, "
        f"concurrency {args.concurrency}; OTLP bytes received: {exported}\n"
    )
    print(
        f"| {'OTLP metrics' if args.metrics else 'tracing'} | CPU µs / output event (median) "
        "| per stream (µs) | vs off |"
    )
    print("|---|---|---|---|")
    for name, values in per_event.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} (min {min(values):.2f}, max {max(values):.2f}) "
            f"| {median * args.tokens:.0f} | {(median / base - 1) * 100:+.1f} % |"
        )


# -- --instructions: a deterministic count ------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def replay(tokens: int, streams: int, variant: str) -> None:
    """The measured workload (run inside callgrind): ``streams`` OpenAI chat streams of ``tokens``
    output events, one simulator write per read, through ``Telemetry`` into ``serve``'s sinks.
    ``variant``: ``off``, ``tracing`` or ``metrics`` (OTLP metrics, exported at shutdown by the
    exporter's own encoder, minus the post)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from prometheus_client import CollectorRegistry
    from yarl import URL

    import streamwatch
    from streamwatch.config import Route, Settings
    from streamwatch.core.analyzer import AnalyzerConfig
    from streamwatch.core.api import Api
    from streamwatch.core.record import CloseCause
    from streamwatch.core.side import Side
    from streamwatch.export import otel, otlp_metrics
    from streamwatch.export.logs import configure_logging
    from streamwatch.export.prometheus import Metrics
    from streamwatch.proxy.telemetry import Telemetry
    from streamwatch.serve import build_sinks
    from streamwatch.simulator.scenario import Scenario, Send, steps

    class Encoding(SpanExporter):
        """The OTLP exporter's work on the span processor's thread, minus the HTTP post."""

        encoded = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            Encoding.encoded += len(spans)
            return SpanExportResult.SUCCESS

    class MetricsEncoding(MetricExporter):
        """The OTLP metric exporter's work on the reader's thread, minus the HTTP post."""

        exported = 0

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            encode_metrics(metrics_data).SerializeToString()
            MetricsEncoding.exported += 1
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    tracing = variant == "tracing"
    if tracing:  # the exporter `serve` would build for OTEL_TRACES_EXPORTER=otlp, minus the post
        otel.span_exporters = lambda environ: [Encoding()]  # type: ignore[assignment,misc]
    if variant == "metrics":  # likewise for OTEL_METRICS_EXPORTER=otlp
        otlp_metrics._otlp_exporter = lambda environ: MetricsEncoding()
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open until the process exits)
    configure_logging("json", "info", devnull)  # one JSON line per stream, as serve
    settings = Settings(routes=(Route("default", URL("http://127.0.0.1:1")),))
    environ = {
        "off": {},
        "tracing": {"OTEL_TRACES_EXPORTER": "otlp"},
        "metrics": {"OTEL_METRICS_EXPORTER": "otlp"},
    }[variant]
    sinks, closers = build_sinks(settings, environ, Metrics(CollectorRegistry()))
    scenario = Scenario(api=Api.OPENAI_CHAT, model="gpt-4o-mini", output_tokens=tokens)
    reads = [step.data for step in steps(scenario) if isinstance(step, Send)]
    request = [(b"host", b"127.0.0.1"), (b"content-length", b"80"), (b"traceparent", TRACEPARENT)]
    config = AnalyzerConfig()
    for n in range(streams):
        start = n * 10**9
        telemetry = Telemetry(
            sinks, method="POST", path="/v1/chat/completions", route="default",
            side=Side.CLIENT, headers=request, t_request_ns=start, server=("127.0.0.1", 1),
        )  # fmt: skip
        telemetry.inject(request)
        telemetry.exchange.request_model, telemetry.exchange.stream_requested = "gpt-4o-mini", True
        tap = telemetry.response(
            200, [(b"content-type", b"text/event-stream")], content_type="text/event-stream",
            content_encoding=None, config=config, override=None,
        )  # fmt: skip
        assert tap is not None
        for at, read in enumerate(reads, start=start + 1000):
            tap.feed(read, at)
        telemetry.finish(200, CloseCause.UPSTREAM_EOF, None)

    async def close() -> None:  # flushes the spans still queued: their export is counted too
        for closer in closers:
            await closer()

    asyncio.run(close())
    assert Encoding.encoded == (streams if tracing else 0), Encoding.encoded
    assert (MetricsEncoding.exported > 0) == (variant == "metrics"), MetricsEncoding.exported
    print(Path(streamwatch.__file__).parent.parent)


def count(repo: Path, tokens: int, streams: int, variant: str) -> int:
    """Instructions callgrind counts in a replay of ``streams`` streams from checkout ``repo``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                *callgrind.command(out), sys.executable, __file__,
                "--replay", f"{tokens},{streams},{variant}",
            ],
            capture_output=True, text=True, check=True,
            # One export, at shutdown: a periodic one would land in a run or not by wall time.
            env={
                **os.environ,
                "PYTHONPATH": str(repo),
                "PYTHONHASHSEED": "0",
                "OTEL_METRIC_EXPORT_INTERVAL": str(24 * 3600 * 1000),
            },
        )  # fmt: skip
    if Path(done.stdout.split()[-1]) != repo.resolve():
        raise SystemExit(f"imported streamwatch from {done.stdout.split()[-1]}, not {repo}")
    return callgrind.collected(done.stderr)


def instructions(repo: Path, passes: int, *, metrics: bool) -> None:
    """Instructions per stream, tracing (or OTLP metrics) off and on, for 20- and 200-event
    streams."""
    variant, on_name = (
        ("metrics", "OTLP metrics on") if metrics else ("tracing", "on, 100 % sampled")
    )
    print(f"{repo}: instructions per stream (callgrind, {passes} streams counted)\n")
    print(f"| output events per stream | {variant} off | {on_name} | added per stream | vs off |")
    print("|---|---|---|---|---|")
    for tokens in (20, 200):
        per_stream: dict[str, float] = {}
        for name in ("off", variant):
            base = count(repo, tokens, 4, name)
            more = count(repo, tokens, 4 + passes, name)
            per_stream[name] = (more - base) / passes
        off, on = per_stream["off"], per_stream[variant]
        print(
            f"| {tokens} | {off:,.0f} | {on:,.0f} | {on - off:,.0f} | {(on / off - 1) * 100:+.1f} % |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--metrics", action="store_true", help="OTLP metrics off vs on")
    parser.add_argument(
        "--instructions", action="store_true", help="callgrind instruction counts per stream"
    )
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to count")
    parser.add_argument("--passes", type=int, default=10, help="streams counted (--instructions)")
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:
        tokens, streams, variant = args.replay.split(",")
        replay(int(tokens), int(streams), variant)
    elif args.instructions:
        instructions(args.repo, args.passes, metrics=args.metrics)
    else:
        asyncio.run(main(args))
