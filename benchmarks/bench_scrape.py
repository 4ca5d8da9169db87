"""CPU of one /metrics render at saturation: prometheus-client's encoders against
:mod:`streamwatch.export.exposition`, on the series-budget registry (50 models on 2 APIs, every
label value seen, about 4,700 series), in the text format and in OpenMetrics.

    .venv/bin/python benchmarks/bench_scrape.py             # median of 21 renders each

CPU time (``time.process_time``) of each render, the two interleaved; ``slice_s`` is set so the
sliced render runs in one piece, the CPU it spends whatever the slicing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamwatch.export.exposition import Exposition, render
from streamwatch.export.prometheus import Metrics
from tests.export.test_series_budget import saturate

FORMATS = {"text": "", "openmetrics": "application/openmetrics-text; version=1.0.0"}


async def main(rounds: int) -> None:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as serve runs
    registry = CollectorRegistry()
    saturate(Metrics(registry))
    exposition = Exposition(registry)
    for name, accept in FORMATS.items():
        encoder, content_type = choose_encoder(accept)
        library: list[float] = []
        ours: list[float] = []
        size = 0
        for _ in range(rounds):
            start = time.process_time()
            size = len(encoder(registry))
            library.append(time.process_time() - start)
            start = time.process_time()
            await render(exposition, content_type, slice_s=60.0)
            ours.append(time.process_time() - start)
        print(
            f"{name:12s} {size:,} bytes: prometheus-client {statistics.median(library) * 1e3:.1f} ms,"
            f" streamwatch {statistics.median(ours) * 1e3:.1f} ms CPU (median of {rounds})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    asyncio.run(main(parser.parse_args().rounds))
