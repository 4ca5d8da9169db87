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
"""

from __future__ import annotations

import argparse
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
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                *callgrind.command(out),
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
    measured, reads = done.stdout.split()[-2:]
    if Path(measured) != repo.resolve():
        raise SystemExit(f"imported streamwatch from {measured}, not {repo}")
    return callgrind.collected(done.stderr), int(reads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout to measure")
    default_corpus = os.environ.get("STREAMWATCH_CORPUS") or str(REPO_ROOT.parent / "shared/corpus")
    parser.add_argument("--corpus", type=Path, default=Path(default_corpus))
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument(
        "--metrics", action="store_true", help="through the tap and Prometheus sink"
    )
    parser.add_argument("--replay", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.repo, args.corpus, args.replay, metrics=args.metrics)
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
