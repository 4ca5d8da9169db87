"""The "nothing lost" assertions L1-L5 of RELIABILITY.md, as reusable helpers."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from tests.reliability.harness.client import Response
from tests.reliability.harness.proxy import ProxyProcess

# How late a timer may fire on a loaded 2-core box shared with other suites. Timing assertions
# keep their lower bound (a timeout that fires early, beyond EARLY below, is a bug) and use this as
# the upper one: it still tells the timer under test from the slower outcome it prevents.
LATE = 10.0
# How early a loop timer may fire: libuv keeps the loop's time in whole milliseconds and uvloop
# rounds a delay to them, so a deadline can pass up to ~1 ms before the same span measured with
# ``time.monotonic()`` (measured: 5 of 300 timers 0.1-0.8 ms early). nginx's timers are whole
# milliseconds too. A lower bound that is a timeout allows this much and no more.
EARLY = 0.002

REQUESTS_TOTAL = "streamwatch_requests_total"
STREAMS_TOTAL = "streamwatch_streams_total"


def first_difference(a: bytes, b: bytes) -> int | None:
    """Offset of the first differing byte (or of the shorter end), None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def assert_bytes_equal(received: bytes, sent: bytes) -> None:
    """L1: the client got exactly the upstream body (sha256, with the first differing offset)."""
    if received != sent:
        at = first_difference(received, sent)
        raise AssertionError(
            f"body differs at offset {at}: got {len(received)} bytes "
            f"sha256 {hashlib.sha256(received).hexdigest()[:16]}, upstream sent {len(sent)} bytes "
            f"sha256 {hashlib.sha256(sent).hexdigest()[:16]}; "
            f"got {received[at : at + 40]!r} expected {sent[at : at + 40]!r}"
        )


def assert_clean_end(response: Response) -> None:
    """L2, clean side: h11 saw the end of the message and no framing error."""
    assert response.framing_error is None, response.framing_error
    assert response.complete, "response did not end cleanly"


def assert_aborted(response: Response) -> None:
    """L2, abort side: the client saw a reset, a premature EOF or broken framing, never a clean end."""
    assert not response.complete, "an upstream abort reached the client as a clean end"
    assert b"0\r\n\r\n" not in response.raw[-5:], "terminating chunk sent after an abort"
    assert response.reset or response.eof or response.framing_error, "connection still open"


def assert_accounting(proxy: ProxyProcess) -> None:
    """L3: every finished SSE stream has exactly one outcome (requests == sum of outcomes, per api)."""
    samples = proxy.samples()
    for api in ("openai_chat", "openai_responses", "anthropic_messages"):
        outcomes = sum(v for n, lab, v in samples if n == STREAMS_TOTAL and lab.get("api") == api)
        streams = [
            line
            for line in proxy.events()
            if str(line.get("event", "")).startswith("stream.") and line.get("api") == api
        ]
        assert outcomes == len(streams), (api, outcomes, len(streams))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (no sleeping-and-hoping)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Baseline:
    """L5: RSS, FDs and open streams return to what they were before the test."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.rss = proxy.rss()
        self.fds = proxy.fds()

    def check(self, *, rss_slack: int = 5 << 20, fd_slack: int = 2, timeout: float = 5.0) -> None:
        proxy = self.proxy
        assert wait_until(lambda: proxy.fds() <= self.fds + fd_slack, timeout), (
            f"FDs {proxy.fds()} > baseline {self.fds} + {fd_slack}"
        )
        assert wait_until(lambda: _open_streams(proxy) == 0, timeout), "streams still open"
        growth = proxy.rss() - self.rss
        assert growth <= rss_slack, f"RSS grew by {growth / 2**20:.1f} MiB"
        assert not proxy.leaks(), proxy.leaks()


def _open_streams(proxy: ProxyProcess) -> int:
    status, body = proxy.admin_get("/debug/streams")
    if status != 200:
        return -1
    return int(json.loads(body)["inflight"])
