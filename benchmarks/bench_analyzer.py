"""Micro-benchmark of the sans-IO analyzer: cost per upstream read and throughput (not a test).

Replays the corpus streams (or, when the corpus is absent, the project fixture streams) through
``StreamAnalyzer`` as real upstream reads (one SSE event per read) and as 1 KiB and 16 KiB reads,
then each format on its own, one frame per read (an SSE event, a JSON array element, an AWS
event-stream message, an NDJSON line). Each pass analyzes every stream once (construction, every
``feed``, ``close``); the tables give the median CPU time of ``--repeat`` passes. Run from the
repository root:

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
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from streamwatch.core.analyzer import StreamAnalyzer  # noqa: E402
from streamwatch.core.api import Api  # noqa: E402
from streamwatch.core.formats import FORMATS  # noqa: E402
from streamwatch.core.record import CloseCause  # noqa: E402
from tests.core.support import frame_reads  # noqa: E402 (the tests' own splitters)
from tests.core.support import sse_events as per_event  # noqa: E402

API_OF_DIALECT = {"gemini_generate_content": Api.GEMINI, "cohere_chat_v2": Api.COHERE_V2}
FIXTURE_APIS = {  # project fixture file prefix -> api
    "openai-chat": Api.OPENAI_CHAT,
    "openai-responses": Api.OPENAI_RESPONSES,
    "openai-completions": Api.OPENAI_COMPLETIONS,
    "anthropic": Api.ANTHROPIC_MESSAGES,
    "gemini-array": Api.GEMINI_JSON,
    "gemini": Api.GEMINI,
    "bedrock-converse": Api.BEDROCK_CONVERSE,
    "bedrock-invoke": Api.BEDROCK_INVOKE,
    "ollama-chat": Api.OLLAMA_CHAT,
    "ollama-generate": Api.OLLAMA_GENERATE,
    "cohere-v2": Api.COHERE_V2,
}
SSE_APIS = frozenset({Api.OPENAI_CHAT, Api.OPENAI_RESPONSES, Api.ANTHROPIC_MESSAGES})


def api_of(row: dict[str, Any]) -> Api:
    if row["protocol"] == "other":
        return API_OF_DIALECT.get(row.get("dialect") or "", Api.SSE)
    if row.get("framing") == "json_array":
        return Api.GEMINI_JSON
    return Api(row["protocol"])


def fixed(size: int) -> Callable[[bytes], list[bytes]]:
    return lambda raw: [raw[i : i + size] for i in range(0, len(raw), size)]


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "one SSE event per read": lambda raw: list(per_event(raw)),
    "1 KiB reads": fixed(1024),
    "16 KiB reads": fixed(16 * 1024),
}


def load_streams(corpus: Path) -> tuple[str, list[tuple[Api, bytes]]]:
    """(description, [(api, body)]) from both corpus parts, else from tests/fixtures/streams."""
    streams = []
    for part in ("llm-streams", "provider-streams"):
        index = corpus / part / "index.json"
        if index.is_file():
            rows = json.loads(index.read_text("utf-8"))
            streams += [(api_of(row), (corpus / row["file"]).read_bytes()) for row in rows]
    if streams:
        return f"corpus {corpus} ({len(streams)} streams)", streams
    fixtures = REPO_ROOT / "tests" / "fixtures" / "streams"
    streams = [
        (
            next(api for prefix, api in FIXTURE_APIS.items() if path.name.startswith(prefix)),
            path.read_bytes(),
        )
        for path in sorted(fixtures.iterdir())
    ]
    return f"project fixtures ({len(streams)} streams; corpus not found at {corpus})", streams


def timed(streams: list[tuple[Api, list[bytes]]], repeat: int) -> float:
    """Median CPU nanoseconds of one pass over ``streams`` (after one warm-up pass)."""
    one_pass(streams)
    return statistics.median(one_pass(streams) for _ in range(repeat))


def one_pass(streams: list[tuple[Api, list[bytes]]]) -> int:
    """Analyze every stream once; returns the elapsed nanoseconds."""
    start = time.process_time_ns()
    for api, chunks in streams:
        analyzer = StreamAnalyzer(api, 0)
        at = 0
        for at, chunk in enumerate(chunks, start=1):
            analyzer.feed(chunk, at)
        analyzer.close(at + 1, CloseCause.UPSTREAM_EOF)
    return time.process_time_ns() - start


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
    sse_streams = [(api, raw) for api, raw in streams if api in SSE_APIS]
    total_bytes = sum(len(raw) for _, raw in sse_streams)
    print(f"streams: {description}")
    print(f"python {platform.python_version()} on {platform.machine()}, median of {args.repeat}\n")
    print(f"The three SSE APIs ({len(sse_streams)} streams, {total_bytes} bytes):\n")
    print("| chunking | reads | median pass (ms) | µs per read | µs per KiB | MB/s |")
    print("|---|---:|---:|---:|---:|---:|")
    worst = 0.0
    for label, split in CHUNKINGS.items():
        chunked = [(api, split(raw)) for api, raw in sse_streams]
        reads = sum(len(chunks) for _, chunks in chunked)
        median_ns = timed(chunked, args.repeat)
        per_kib = median_ns / 1e3 / (total_bytes / 1024)
        worst = max(worst, per_kib)
        print(
            f"| {label} | {reads} | {median_ns / 1e6:.2f} | {median_ns / 1e3 / reads:.2f} "
            f"| {per_kib:.1f} | {total_bytes / (median_ns / 1e9) / 1e6:.1f} |"
        )
    print("\nEach format, one frame per read:\n")
    print("| api | framing | streams | bytes | reads | µs per read | µs per KiB | MB/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for api in Api:
        mine = [raw for a, raw in streams if a is api]
        if not mine:
            continue
        framing = FORMATS[api].framing
        chunked = [(api, frame_reads(raw, framing)) for raw in mine]
        reads = sum(len(chunks) for _, chunks in chunked)
        size = sum(len(raw) for raw in mine)
        median_ns = timed(chunked, args.repeat)
        print(
            f"| {api} | {framing} | {len(mine)} | {size} | {reads} "
            f"| {median_ns / 1e3 / reads:.2f} | {median_ns / 1e3 / (size / 1024):.1f} "
            f"| {size / (median_ns / 1e9) / 1e6:.1f} |"
        )

    if args.max_us_per_kib is not None and worst > args.max_us_per_kib:
        print(f"\nover budget: {worst:.1f} µs/KiB > {args.max_us_per_kib}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
