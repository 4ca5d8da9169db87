"""Instructions per read of the SSE hot path, counted by callgrind: a deterministic A/B on a busy box.

Wall and CPU time on a shared machine swing by tens of percent between runs; the number of
instructions the analyzer executes does not. This replays the three SSE APIs' corpus streams (one
event per read) through ``StreamAnalyzer`` of the checkout given (default: this one) under
``valgrind --tool=callgrind``, once with 1 pass and once with ``1 + passes``, and prints the
difference per pass and per read (start-up cancels out). Compare two checkouts:

    .venv/bin/python benchmarks/count_instructions.py --repo /path/to/main
    .venv/bin/python benchmarks/count_instructions.py

``--metrics`` feeds each read through the proxy's tap into the Prometheus sink as ``serve`` wires
it (``Sinks.open``, ``Tap.feed``, ``Tap.close``, ``finish``): analysis plus metrics per read.

``--per-request`` counts what one whole request costs a real ``streamwatch serve`` (of ``--repo``)
run under callgrind, every thread: ``--requests`` N and then 3N short OpenAI chat streams
(``--tokens`` output events, no pacing) one after another on one keep-alive connection, from
``bench_tracing.py``'s client through the proxy to the simulator (both in this process, outside
callgrind), metrics and the JSON log line on, tracing off, the watchdog's tick out of the way;
start-up and shutdown cancel out of the difference. It is the per-request work (request head,
``Telemetry``, sinks opened, response head, the stream's few reads, record, log line) that a
stream's reads do not amortise:

    .venv/bin/python benchmarks/count_instructions.py --per-request --repo /path/to/main
    .venv/bin/python benchmarks/count_instructions.py --per-request
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import callgrind

REPO_ROOT = Path(__file__).resolve().parent.parent
SSE_PROTOCOLS = ("openai_chat", "openai_responses", "anthropic_messages")


def replay(repo: Path, corpus: Path, passes: int, *, metrics: bool) -> None:
    """The measured workload (run inside callgrind): ``passes`` passes over the streams."""
    sys.path.insert(0, str(repo))
    if metrics:
        replay_metrics(corpus, passes)
        return
    import streamwatch
    from streamwatch.core.analyzer import StreamAnalyzer
    from streamwatch.core.record import CloseCause

    streams = _streams(corpus)
    for _ in range(passes):
        for api, chunks in streams:
            analyzer = StreamAnalyzer(api, 0)
            for at, chunk in enumerate(chunks, start=1):
                analyzer.feed(chunk, at)
            analyzer.close(10**9, CloseCause.UPSTREAM_EOF)
    print(Path(streamwatch.__file__).parent.parent, sum(len(chunks) for _, chunks in streams))


def _streams(corpus: Path) -> list[tuple[Any, list[bytes]]]:
    from streamwatch.core.api import Api
    from tests.core.support import sse_events

    rows = json.loads((corpus / "llm-streams" / "index.json").read_text("utf-8"))
    return [
        (Api(row["protocol"]), list(sse_events((corpus / row["file"]).read_bytes())))
        for row in rows
        if row["protocol"] in SSE_PROTOCOLS
    ]


def replay_metrics(corpus: Path, passes: int) -> None:
    """``--metrics``: each stream through a tap whose sinks are the Prometheus sink."""
    from multidict import CIMultiDict, CIMultiDictProxy
    from prometheus_client import CollectorRegistry

    import streamwatch
    from streamwatch.core.analyzer import StreamAnalyzer
    from streamwatch.core.record import CloseCause
    from streamwatch.export.prometheus import Metrics
    from streamwatch.export.prometheus_sink import PrometheusSink
    from streamwatch.proxy.tap import Tap
    from streamwatch.sinks import Exchange, Sinks

    streams = _streams(corpus)
    sinks = Sinks(sinks=(PrometheusSink(Metrics(CollectorRegistry())),))
    headers = CIMultiDictProxy(CIMultiDict[str]())
    for _ in range(passes):
        for api, chunks in streams:
            exchange = Exchange("r", "default", "POST", "/", api, "m", True, 0, headers)
            fanout = sinks.open(exchange)
            fanout.response(200, api)
            tap = Tap(StreamAnalyzer(api, 0, request_model="m"), fanout)
            for at, chunk in enumerate(chunks, start=1):
                tap.feed(chunk, at)
            fanout.finish(tap.close(10**9, CloseCause.UPSTREAM_EOF), None)
    print(Path(streamwatch.__file__).parent.parent, sum(len(chunks) for _, chunks in streams))


def count(repo: Path, corpus: Path, passes: int, *, metrics: bool) -> tuple[int, int]:
    """(instructions, reads per pass) of a run with ``passes`` passes."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                *callgrind.run_in(Path(tmp)),
                sys.executable,
                __file__,
                "--replay",
                str(passes),
                "--repo",
                str(repo),
                "--corpus",
                str(corpus),
                *(["--metrics"] if metrics else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        instructions = callgrind.collected_in(Path(tmp))
    measured, reads = done.stdout.split()[-2:]
    if Path(measured) != repo.resolve():
        raise SystemExit(f"imported streamwatch from {measured}, not {repo}")
    return instructions, int(reads)


async def serve_requests(repo: Path, upstream: str, requests: int, tokens: int) -> int:
    """Instructions of a ``streamwatch serve`` run under callgrind that relayed ``requests``."""
    from bench_tracing import load, serve

    with tempfile.TemporaryDirectory() as tmp:
        proxy = await serve(
            upstream,
            {"PYTHONPATH": str(repo), "PYTHONHASHSEED": "0"},
            wrapper=callgrind.run_in(Path(tmp)),
            flags=("--watchdog-interval", "3600"),  # ticks are per second, not per request
            start_timeout=600,
        )
        try:
            await load(proxy.port, requests, tokens, 1)
        finally:
            await proxy.stop()
        return callgrind.collected_in(Path(tmp))


def serving_from(repo: Path) -> None:
    """Make the ``serve`` this process starts import streamwatch from ``repo``, compiled."""
    os.chdir(repo)  # ``python -m`` puts the working directory first on sys.path
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(repo / "streamwatch")], check=True
    )
    imported = subprocess.run(  # (compiled first: a run that writes .pyc files counts that too)
        [sys.executable, "-c", "import streamwatch; print(streamwatch.__file__)"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    if Path(imported.stdout.strip()).parent.parent != repo.resolve():
        raise SystemExit(f"serve would import streamwatch from {imported.stdout}, not {repo}")


async def per_request(repo: Path, requests: int, tokens: int) -> None:
    """``--per-request``: instructions per request, from runs of N and 3N requests."""
    from streamwatch.simulator.profile import Profile
    from streamwatch.simulator.server import start_simulator

    profile = Profile(weights={"normal": 1.0}, seed=1, ttft_s=0.0, gap_mean_s=0.0, gap_jitter_s=0.0)
    runner, port = await start_simulator("127.0.0.1", 0, profile)
    try:
        upstream = f"http://127.0.0.1:{port}"
        base, more = await asyncio.gather(  # side by side: instruction counts do not mind
            serve_requests(repo, upstream, requests, tokens),
            serve_requests(repo, upstream, 3 * requests, tokens),
        )
    finally:
        await runner.cleanup()
    print(
        f"{repo}: {(more - base) / (2 * requests):,.0f} instructions per request "
        f"({tokens} output events each; {requests} vs {3 * requests} requests: "
        f"{base / 1e6:,.1f} M, {more / 1e6:,.1f} M)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to measure")
    default_corpus = os.environ.get("STREAMWATCH_CORPUS") or str(REPO_ROOT.parent / "shared/corpus")
    parser.add_argument("--corpus", type=Path, default=Path(default_corpus))
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument(
        "--metrics", action="store_true", help="through the tap and Prometheus sink"
    )
    parser.add_argument(
        "--per-request", action="store_true", help="a real serve: instructions per request"
    )
    parser.add_argument("--requests", type=int, default=100, help="N (--per-request)")
    parser.add_argument("--tokens", type=int, default=2, help="output events (--per-request)")
    parser.add_argument("--replay", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.repo, args.corpus, args.replay, metrics=args.metrics)
        return
    if args.per_request:
        serving_from(args.repo.resolve())
        asyncio.run(per_request(args.repo.resolve(), args.requests, args.tokens))
        return
    base, reads = count(args.repo, args.corpus, 1, metrics=args.metrics)
    more, _ = count(args.repo, args.corpus, 1 + args.passes, metrics=args.metrics)
    per_pass = (more - base) / args.passes
    print(
        f"{args.repo}: {per_pass / 1e6:.2f} M instructions per pass, {reads} reads, "
        f"{per_pass / reads:,.0f} per read"
    )


if __name__ == "__main__":
    main()
