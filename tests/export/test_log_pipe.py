"""The log pipe on a real OS pipe: lines leave in order; a full queue drops and counts, never
blocks; a drain at close writes every queued line to a reader and gives up on one that never reads.

The OS pipe is shrunk to one page, so a handful of 1 KiB lines fill it and the writer thread blocks
exactly as it does when a log shipper stops reading streamwatch's stderr.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from streamwatch.export.log_pipe import LogPipe

LINES = 100
GENEROUS = 30.0  # seconds: a bound on waits that end at once when the code is right


def _render(fields: dict[str, Any]) -> str:
    return json.dumps(fields)


def _line(n: int) -> str:
    return f"{n:04d}" + "x" * 1000


class Pipe:
    """An OS pipe of one page, its read end drained on demand by a thread of the test."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, 4096)
        self.received = bytearray()
        self._reader: threading.Thread | None = None

    def read_all(self) -> None:
        """Start reading until EOF (the write end closed)."""

        def run() -> None:
            while chunk := os.read(self.r, 1 << 16):
                self.received += chunk

        self._reader = threading.Thread(target=run, daemon=True)
        self._reader.start()

    def lines(self) -> list[str]:
        """Everything read, once the write end is closed and the reader saw EOF."""
        os.close(self.w)
        assert self._reader is not None
        self._reader.join(GENEROUS)
        assert not self._reader.is_alive()
        return self.received.decode().splitlines()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    os_pipe = Pipe()
    yield os_pipe
    os.close(os_pipe.r)


class TestFullQueue:
    """A queue that is full drops the line and counts it; ``put`` never waits for the reader."""

    def test_drops_are_counted_and_noted(self, pipe: Pipe) -> None:
        """With nothing read, 100 puts return; the lines that arrive later, plus those counted
        dropped, are all 100, in order; the ``log.lines_dropped`` note adds up to the count."""
        counted: list[int] = []
        log = LogPipe(pipe.w, 4, _render)
        log.count_drops(counted.append)
        for n in range(LINES):
            log.put(_line(n))  # the reader is not reading: a blocking put would hang here
        dropped = log.dropped
        assert dropped > 0
        assert sum(counted) == dropped
        pipe.read_all()
        assert log.close(GENEROUS)
        lines = pipe.lines()
        data = [int(line[:4]) for line in lines if not line.startswith("{")]
        notes = [json.loads(line) for line in lines if line.startswith("{")]
        assert data == sorted(data)
        assert len(data) + dropped == LINES
        assert sum(note["dropped"] for note in notes) == dropped
        assert {note["event"] for note in notes} == {"log.lines_dropped"}

    def test_drops_before_counting_began_are_counted(self, pipe: Pipe) -> None:
        """A counter attached after drops hears them all at once (drops at start-up are kept)."""
        log = LogPipe(pipe.w, 1, _render)
        for n in range(LINES):
            log.put(_line(n))
        counted: list[int] = []
        log.count_drops(counted.append)
        assert sum(counted) == log.dropped > 0
        pipe.read_all()
        assert log.close(GENEROUS)
        pipe.lines()


class TestClose:
    """Closing drains the queue to a reader, within a bound."""

    def test_every_queued_line_is_written(self, pipe: Pipe) -> None:
        """200 KiB queued behind a full pipe all arrive, in order, once the reader reads."""
        log = LogPipe(pipe.w, 1000, _render)
        for n in range(200):
            log.put(_line(n))
        pipe.read_all()
        assert log.close(GENEROUS)
        assert [int(line[:4]) for line in pipe.lines()] == list(range(200))
        assert log.dropped == 0

    def test_a_reader_that_never_reads_does_not_hold_it(self, pipe: Pipe) -> None:
        """With the pipe full and unread, close gives up at its bound and says so."""
        log = LogPipe(pipe.w, 1000, _render)
        for n in range(50):
            log.put(_line(n))
        assert log.close(0.2) is False
        pipe.read_all()  # let the writer finish before the test closes its descriptor
        assert log.close(GENEROUS)
        pipe.lines()


class TestBrokenPipe:
    """A reader that went away (EPIPE) costs the lines, counted, and raises nothing."""

    def test_lines_dropped_and_counted(self, pipe: Pipe) -> None:
        counted: list[int] = []
        os.close(pipe.r)
        pipe.r = os.open(os.devnull, os.O_RDONLY)  # the fixture closes something
        log = LogPipe(pipe.w, 100, _render)
        log.count_drops(counted.append)
        for n in range(10):
            log.put(_line(n))
        assert log.close(GENEROUS)
        assert log.dropped == sum(counted) == 10
        os.close(pipe.w)


_STANDARD_RECORDS = """
import logging, sys
from streamwatch.export.logs import configure_logging
configure_logging("json", "info")
for n in range(200):
    logging.getLogger("asyncio").error("record %04d %s", n, "x" * 1000)
print("logged", flush=True)
"""


class TestStandardLibraryRecords:
    """Records of the standard library's loggers (asyncio, aiohttp) take the same pipe, as JSON
    lines: logging them never waits for the reader of stderr."""

    def test_logged_while_stderr_is_unread(self) -> None:
        """200 KiB of asyncio records with nothing reading stderr: the process gets past them at
        once; read afterwards, every record is there, in order, as a JSON line."""
        proc = subprocess.Popen(
            [sys.executable, "-c", _STANDARD_RECORDS],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            readable, _, _ = select.select([proc.stdout], [], [], GENEROUS)
            assert readable, "blocked writing to stderr"
            assert proc.stdout.readline() == b"logged\n"
            lines = [json.loads(line) for line in proc.stderr]
            assert proc.wait(GENEROUS) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        assert [line["event"][:11] for line in lines] == [f"record {n:04d}" for n in range(200)]
        assert {(line["logger"], line["level"]) for line in lines} == {("asyncio", "error")}
