"""Fail-open through a real ``streamwatch serve``: a fault in telemetry never ends a stream.

The faults here are real ones, not injected exceptions, on streamwatch's log pipe (stderr). Its
reader goes away, so every log write fails with EPIPE from then on (a crashed log shipper, a closed
terminal): the bytes must keep flowing, the kept-alive connection must serve its next request,
the other sinks must still see every stream, and SIGTERM must still drain and exit 0. Or its
reader stops reading (a stuck shipper, ``| less``): once the pipe is full, log lines are dropped
and counted, never waited for, so no stream stalls; a normal stop still writes every line queued,
and a reader that stays stuck does not hold the exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.reliability.harness.checks import LATE, assert_clean_end, wait_until
from tests.reliability.harness.client import RawClient, Response, chat_request
from tests.reliability.harness.proxy import ProxyProcess
from tests.reliability.harness.upstream import (
    End,
    FakeUpstream,
    Gate,
    Headers,
    Scenario,
    Send,
    sse_scenario,
)

EVENTS = [b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]


def _serve_then_break_its_log(upstream: FakeUpstream) -> ProxyProcess:
    """``streamwatch serve`` whose stderr pipe is closed by its reader once it has started."""
    process = ProxyProcess(upstream.url)
    process.proc = proc = subprocess.Popen(
        process.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMWATCH_")},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ends (and fails below) if the process exits instead
        event = json.loads(line)
        if event.get("event") == "streamwatch.started":
            process.port = int(event["listen"].rpartition(":")[2])
            process.admin_port = int(event["admin"].rpartition(":")[2])
            break
    proc.stderr.close()  # the reader is gone: every later log write gets EPIPE
    assert process.port, "streamwatch did not start"
    return process


class TestLogPipeBroken:
    """Every log write failing (EPIPE) ends no stream and stops no other sink."""

    def test_streams_keep_flowing(self, upstream: FakeUpstream) -> None:
        """Two streams on one kept-alive connection after the log pipe broke: byte-exact, clean
        ends, both counted in /metrics; SIGTERM still exits 0."""
        process = _serve_then_break_its_log(upstream)
        try:
            key = upstream.add(sse_scenario(EVENTS))
            client = RawClient(process.port, timeout=LATE)
            try:
                for _ in range(2):  # the second needs the first's end to have run in full
                    client.expect()
                    client.send(chat_request(key))
                    response = client.read(deadline=LATE)
                    assert_clean_end(response)
                    assert bytes(response.body) == b"".join(EVENTS)
                    client._parser.start_next_cycle()
                    client.response = Response()
            finally:
                client.close()
            assert process.total("streamwatch_streams_total", outcome="completed") == 2
        finally:
            code = process.stop(timeout=LATE)
        assert code == 0


DROPPED = "streamwatch_log_lines_dropped_total"
#: Far more streams than a full pipe (64 KiB) and the reader's buffer hold lines of (~1 KiB each).
FILL_LIMIT = 2000


def _stream(port: int, key: str, request_id: str) -> None:
    """One short stream, which must arrive whole and end cleanly."""
    client = RawClient(port, timeout=LATE)
    try:
        client.expect()
        client.send(chat_request(key, request_id=request_id))
        response = client.read(deadline=LATE)
    finally:
        client.close()
    assert_clean_end(response)
    assert bytes(response.body) == b"".join(EVENTS)


def _fill_until_dropped(process: ProxyProcess, key: str, prefix: str) -> int:
    """Short streams, each whole and on time, until ``/metrics`` counts a dropped log line;
    returns how many were run."""
    for n in range(1, FILL_LIMIT + 1):
        _stream(process.port, key, f"{prefix}{n}")
        if n % 8 == 0 and process.total(DROPPED) > 0:
            return n
    raise AssertionError(f"{FILL_LIMIT} streams and no log line dropped")


@pytest.fixture
def held(upstream: FakeUpstream) -> Iterator[tuple[str, threading.Event]]:
    """A scenario that sends one event, then waits for its gate before the rest and a clean end."""
    gate = threading.Event()
    key = upstream.add(
        Scenario([Headers(), Send(EVENTS[0]), Gate(gate, within=120), Send(EVENTS[1]), End()])
    )
    yield key, gate
    gate.set()


class TestLogPipeFull:
    """A log reader that stops reading drops log lines (counted), never stalls a stream."""

    def test_streams_flow_lines_dropped_and_counted(
        self, upstream: FakeUpstream, held: tuple[str, threading.Event]
    ) -> None:
        """With stderr unread: every stream completes on time, an open stream's later bytes still
        arrive, dropped lines are counted on /metrics; once read again, ``log.lines_dropped``
        notes say how many, and every stream has its line or is counted dropped."""
        key = upstream.add(sse_scenario(EVENTS))
        held_key, gate = held
        with ProxyProcess(upstream.url, "--log-queue", "16", log_level="info") as process:
            opened = RawClient(process.port, timeout=LATE)
            try:
                opened.expect()
                opened.send(chat_request(held_key, request_id="held"))
                first = opened.read(until=lambda r: bytes(r.body) == EVENTS[0], deadline=LATE)
                assert bytes(first.body) == EVENTS[0]
                process.pause_reading()
                streams = _fill_until_dropped(process, key, "fill-")
                gate.set()  # the pipe is still full: the open stream's last bytes must flow
                response = opened.read(deadline=LATE)
            finally:
                opened.close()
            assert_clean_end(response)
            assert bytes(response.body) == b"".join(EVENTS)
            before = process.total(DROPPED)
            _stream(process.port, key, "last")  # its line cannot be written either
            assert wait_until(lambda: process.total(DROPPED) > before, timeout=LATE)
            process.resume_reading()
            assert process.wait_log(lambda e: e.get("event") == "log.lines_dropped", LATE * 3)
            dropped = process.total(DROPPED)
            code = process.stop(timeout=LATE * 3)
        assert code == 0
        notes = process.events("log.lines_dropped")
        assert sum(note["dropped"] for note in notes) == dropped
        assert notes[-1]["dropped_total"] == dropped
        lines = [e for e in process.events() if str(e.get("event", "")).startswith("stream.")]
        assert len(lines) + dropped == streams + 2  # every stream: logged, or counted dropped
        print(f"\nlog pipe full: first drop after {streams} streams; {dropped:g} lines dropped, "
              f"{len(lines)} written, {len(notes)} note(s)")  # fmt: skip
        assert not process.leaks(), process.leaks()

    def test_normal_stop_writes_every_queued_line(self, upstream: FakeUpstream) -> None:
        """Lines queued behind a full pipe when SIGTERM arrives are all written once the reader
        reads again: one line per stream, then ``streamwatch.stopped``; none dropped."""
        key = upstream.add(sse_scenario(EVENTS))
        streams = 200  # ~200 KiB of lines: three times what the pipe and the reader's buffer hold
        with ProxyProcess(upstream.url, log_level="info") as process:
            process.pause_reading()
            for n in range(streams):
                _stream(process.port, key, f"queued-{n}")
            assert process.total(DROPPED) == 0
            code = process.stop(timeout=LATE * 3)  # SIGTERM, then stderr is read again
        assert code == 0
        logged = {
            e.get("request_id")
            for e in process.events()
            if str(e.get("event", "")).startswith("stream.")
        }
        assert logged == {f"queued-{n}" for n in range(streams)}
        assert process.events()[-1]["event"] == "streamwatch.stopped"
        assert not process.events("log.lines_dropped")

    def test_stuck_reader_does_not_hold_the_exit(self, upstream: FakeUpstream) -> None:
        """SIGTERM while stderr stays unread and lines are queued: the process still exits 0."""
        key = upstream.add(sse_scenario(EVENTS))
        with ProxyProcess(upstream.url, "--log-queue", "16", log_level="info") as process:
            process.pause_reading()
            _fill_until_dropped(process, key, "stuck-")
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
            code = process.proc.wait(LATE * 3)  # the reader is still paused
        assert code == 0
