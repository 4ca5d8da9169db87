"""T28: the analyzer can be fed anything; forwarding and memory are unaffected, faults are counted."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

import pytest

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.record import CloseCause
from tests.reliability.harness.checks import assert_clean_end
from tests.reliability.harness.client import RawClient, chat_request
from tests.reliability.harness.proxy import ProxyProcess
from tests.reliability.harness.upstream import End, FakeUpstream, Headers, Loop, Scenario, Send
from tests.reliability.streams import corpus_bodies, fixture_bodies

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


class TestAnalyzerBudget:
    """T28(b): analysis is inline, so its cost is a budget: <= 50 us per KiB of stream."""

    def test_cost_per_kib(self) -> None:
        """Every corpus and fixture stream, fed per 1 KiB read, costs <= 50 us/KiB on this machine."""
        bodies = corpus_bodies() + fixture_bodies()
        total = sum(len(b.raw) for b in bodies)
        runs = []
        for _ in range(3):  # best of 3: a busy CI neighbour must not fail the budget
            t0 = time.perf_counter()
            for body in bodies:
                analyzer = StreamAnalyzer(body.api, 0)
                for i in range(0, len(body.raw), 1024):
                    analyzer.feed(body.raw[i : i + 1024], i)
                analyzer.close(len(body.raw) + 1, CloseCause.UPSTREAM_EOF)
            runs.append(time.perf_counter() - t0)
        per_kib = min(runs) / (total / 1024) * 1e6
        print(f"T28 analyzer cost {per_kib:.1f} us/KiB over {total / 1024:.0f} KiB")
        assert per_kib <= 50
