"""T28: the analyzer can be fed anything; forwarding and memory are unaffected, faults are counted."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
import tracemalloc
import uuid

import pytest

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.record import CloseCause
from streamwatch.simulator.scenario import Scenario as SimScenario
from streamwatch.simulator.scenario import Send as SimSend
from streamwatch.simulator.scenario import steps as sim_steps
from tests.reliability.harness.checks import assert_clean_end
from tests.reliability.harness.client import RawClient, chat_request
from tests.reliability.harness.proxy import ProxyProcess
from tests.reliability.harness.upstream import End, FakeUpstream, Headers, Loop, Scenario, Send

MiB = 1 << 20


def _peak_rss_during(proxy: ProxyProcess, action: threading.Thread) -> int:
    peak = proxy.rss()
    action.start()
    while action.is_alive():
        peak = max(peak, proxy.rss())
        time.sleep(0.05)
    return peak


class TestHostileStreams:
    """Huge unterminated lines, huge events and invalid bytes pass byte-exact with bounded memory."""

    @pytest.mark.parametrize(
        ("name", "scenario", "size"),
        [
            pytest.param(
                "50MB-no-newline",
                [Send(b"data: "), Loop(b"x" * 65536, 800)],
                6 + 800 * 65536,
                id="c",
            ),
            pytest.param(
                "10MB-single-event",
                [Send(b"data: "), Loop(b"y" * 65536, 160), Send(b"\n\n")],
                6 + 160 * 65536 + 2,
                id="d",
            ),
            pytest.param(
                "invalid",
                [Send(b"data: \xff\xfe{not json\n\n"), Send(b"data: [DONE]\n\n")],
                0,
                id="e",
            ),
        ],
    )
    def test_bounded(
        self, proxy: ProxyProcess, upstream: FakeUpstream, name: str, scenario: list, size: int
    ) -> None:
        """sha256 equal, clean end, RSS peak growth <= 16 MiB, the oversize/malformed input counted."""
        built = Scenario([Headers(), *scenario, End()])
        key = upstream.add(built)
        rid = uuid.uuid4().hex
        base = proxy.rss()
        result: dict[str, object] = {}

        def run() -> None:
            client = RawClient(proxy.port, timeout=30)
            client.expect()
            client.send(chat_request(key, request_id=rid))
            result["r"] = client.read(deadline=60)
            client.close()

        peak = _peak_rss_during(proxy, threading.Thread(target=run))
        response = result["r"]
        assert_clean_end(response)  # type: ignore[arg-type]
        assert hashlib.sha256(response.body).digest() == hashlib.sha256(built.body).digest()  # type: ignore[attr-defined]
        line = proxy.record(rid)
        print(
            f"T28 {name}: {len(built.body) / MiB:.1f} MiB forwarded, "
            f"proxy RSS peak +{(peak - base) / MiB:.1f} MiB, "
            f"oversize={line['oversize_events']} malformed={line['malformed_frames']}"
        )
        assert peak - base <= 16 * MiB
        if size:
            assert line["oversize_events"] >= 1
        else:
            assert line["malformed_frames"] >= 1


def _frames(api: str, output_tokens: int) -> list[bytes]:
    """A complete simulated stream of ``api`` with ``output_tokens`` output events, one per read."""
    scenario = SimScenario(api=api, model="m", output_tokens=output_tokens)  # type: ignore[arg-type]
    return [step.data for step in sim_steps(scenario) if isinstance(step, SimSend)]


def _kib_reads(frames: list[bytes]) -> list[bytes]:
    raw = b"".join(frames)
    return [raw[i : i + 1024] for i in range(0, len(raw), 1024)]


def _analysis_cost(api: str, reads: list[bytes]) -> tuple[int, int]:
    """(Python and C calls made by every ``feed``, bytes still allocated before ``close``)."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    analyzer = StreamAnalyzer(Api(api), 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sys.setprofile(count)
        try:
            for at, chunk in enumerate(reads, start=1):
                analyzer.feed(chunk, at)
        finally:
            sys.setprofile(None)
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    analyzer.close(len(reads) + 1, CloseCause.UPSTREAM_EOF)
    return calls, retained


APIS = ["openai_chat", "openai_responses", "anthropic_messages"]
CHUNKINGS = {"per-event": lambda frames: frames, "1KiB": _kib_reads}


class TestAnalyzerCost:
    """T28(b): inline analysis does constant work per event and keeps no state that grows with the stream.

    Counted, not timed (calls and allocated bytes are the same on any machine); the time per KiB is
    measured by ``benchmarks/bench_analyzer.py``.
    """

    @pytest.mark.parametrize("chunking", CHUNKINGS)
    @pytest.mark.parametrize("api", APIS)
    def test_work_is_linear(self, api: str, chunking: str) -> None:
        """Each further 250 output events cost as many calls as the 250 before them."""
        split = CHUNKINGS[chunking]
        calls = [_analysis_cost(api, split(_frames(api, n)))[0] for n in (250, 500, 1000)]
        first, second = calls[1] - calls[0], (calls[2] - calls[1]) / 2
        assert first > 0
        assert abs(second - first) <= 0.02 * first, calls

    @pytest.mark.parametrize("api", APIS)
    def test_memory_does_not_grow(self, api: str) -> None:
        """After 10x more output events the analyzer holds no more memory than after the first."""
        short = _analysis_cost(api, _frames(api, 250))[1]
        long = _analysis_cost(api, _frames(api, 2500))[1]
        assert long <= short + 4096, (short, long)
