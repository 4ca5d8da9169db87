"""Micro-benchmark of the sans-IO analyzer: cost per upstream read and throughput (not a test).

Replays the corpus streams (or, when the corpus is absent, the project fixture streams) through
``StreamAnalyzer`` as real upstream reads (one SSE event per read) and as 1 KiB and 16 KiB reads.
Each pass analyzes every stream once (construction, every ``feed``, ``close``); the table gives the
median of ``--repeat`` passes. Run from the repository root:

    .venv/bin/python benchmarks/bench_analyzer.py [--repeat 21] [--corpus PATH] [--max-us-per-kib 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from streamwatch.core.analyzer import StreamAnalyzer  # noqa: E402
from streamwatch.core.api import Api  # noqa: E402
from streamwatch.core.record import CloseCause  # noqa: E402
from tests.core.support import sse_events as per_event  # noqa: E402 (the tests' own splitter)

API_OF_PROTOCOL = {
    "openai_chat": Api.OPENAI_CHAT,
    "openai_responses": Api.OPENAI_RESPONSES,
    "anthropic_messages": Api.ANTHROPIC_MESSAGES,
}
FIXTURE_APIS = {  # project fixture file prefix -> api
    "openai-chat": Api.OPENAI_CHAT,
    "openai-responses": Api.OPENAI_RESPONSES,
    "anthropic": Api.ANTHROPIC_MESSAGES,
}


def fixed(size: int) -> Callable[[bytes], list[bytes]]:
    return lambda raw: [raw[i : i + size] for i in range(0, len(raw), size)]


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "one SSE event per read": lambda raw: list(per_event(raw)),
    "1 KiB reads": fixed(1024),
    "16 KiB reads": fixed(16 * 1024),
}


def load_streams(corpus: Path) -> tuple[str, list[tuple[Api, bytes]]]:
    """(description, [(api, body)]) from the corpus, else from tests/fixtures/streams."""
    index = corpus / "llm-streams" / "index.json"
    if index.is_file():
        streams = []
        for row in json.loads(index.read_text("utf-8")):
            api = API_OF_PROTOCOL.get(row["protocol"], Api.SSE)
            streams.append((api, (corpus / row["file"]).read_bytes()))
        return f"corpus {corpus} ({len(streams)} streams)", streams
    fixtures = REPO_ROOT / "tests" / "fixtures" / "streams"
    streams = [
        (
            next(api for prefix, api in FIXTURE_APIS.items() if path.name.startswith(prefix)),
            path.read_bytes(),
        )
        for path in sorted(fixtures.glob("*.sse"))
    ]
    return f"project fixtures ({len(streams)} streams; corpus not found at {corpus})", streams


def one_pass(streams: list[tuple[Api, list[bytes]]]) -> int:
    """Analyze every stream once; returns the elapsed nanoseconds."""
    start = time.perf_counter_ns()
    for api, chunks in streams:
        analyzer = StreamAnalyzer(api, 0)
        at = 0
        for at, chunk in enumerate(chunks, start=1):
            analyzer.feed(chunk, at)
        analyzer.close(at + 1, CloseCause.UPSTREAM_EOF)
    return time.perf_counter_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="passes per chunking (median)")
    default_corpus = os.environ.get("STREAMWATCH_CORPUS") or str(REPO_ROOT.parent / "shared/corpus")
    parser.add_argument("--corpus", type=Path, default=Path(default_corpus))
    parser.add_argument(
        "--max-us-per-kib",
        type=float,
        help="exit 1 if any chunking costs more (T28(b) of RELIABILITY.md budgets 50)",
    )
    args = parser.parse_args()

    description, streams = load_streams(args.corpus)
    total_bytes = sum(len(raw) for _, raw in streams)
    print(f"streams: {description}, {total_bytes} bytes")
    print(f"python {platform.python_version()} on {platform.machine()}, median of {args.repeat}\n")
    print("| chunking | reads | median pass (ms) | µs per read | µs per KiB | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    for label, split in CHUNKINGS.items():
        chunked = [(api, split(raw)) for api, raw in streams]
        reads = sum(len(chunks) for _, chunks in chunked)
        one_pass(chunked)  # warm-up
        median_ns = statistics.median(one_pass(chunked) for _ in range(args.repeat))
        per_kib = median_ns / 1e3 / (total_bytes / 1024)
        worst = max(worst, per_kib)
        print(
            f"| {label} | {reads} | {median_ns / 1e6:.2f} | {median_ns / 1e3 / reads:.2f} "
            f"| {per_kib:.1f} | {total_bytes / (median_ns / 1e9) / 1e6:.1f} |"
        )
    if args.max_us_per_kib is not None and worst > args.max_us_per_kib:
        print(f"\nover budget: {worst:.1f} µs/KiB > {args.max_us_per_kib}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
