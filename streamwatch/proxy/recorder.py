"""``serve --capture-dir``: response bodies written to disk, with every read's arrival time, in the
format ``streamwatch analyze`` reads (:mod:`streamwatch.core.capture`).

The tap hands each read to its stream's :class:`StreamCapture` right after the read was written to
the client; the capture only queues it (a reference, no copy, no encoding) for one writer thread,
which encodes and writes. The byte path never waits on the disk: the queue holds at most
:data:`MAX_BACKLOG_BYTES`, and a read that does not fit abandons that stream's capture (counted as
``backlog``) instead of blocking or growing memory. Any ``OSError`` of the writer (a full disk, a
directory made read-only or removed) ends only that capture (logged, counted ``failed``); the
stream and the other captures carry on.

A capture is written to a hidden ``.partial-<pid>-<seq>.jsonl`` while its stream is open and, once
the stream's record is known, either renamed to its final name or deleted: ``--capture-keep
problems`` (the default) keeps streams whose outcome is not ``completed``, that stalled, or whose
analysis failed -- the streams an on-call engineer is asked about -- and ``all`` keeps every stream.

Caps, the way journald's ``SystemMaxUse`` and logrotate's ``rotate`` treat logs: a capture larger
than ``--capture-max-stream-bytes`` is abandoned (``too_large``: a cut capture would give a false
``truncated`` verdict), and when the directory's captures would pass ``--capture-max-bytes`` the
**oldest** kept captures are deleted first (the newest failures are the ones asked about). Only when
open captures alone fill the budget is the new read refused (``no_room``). Captures already in the
directory at start-up count towards the budget; under ``--workers N`` each worker keeps its share
(``max_bytes / N``) and names its files with its pid.

File names are built from the time, the outcome, the pid, a sequence number and the request id
reduced to ``[A-Za-z0-9_-]`` (request ids come from clients); files are created ``0600`` with
``O_EXCL | O_NOFOLLOW``, so a planted symlink is never followed and nothing is overwritten. A
capture holds the response body (completion text) but no request body, no header, and no query
string, so no credential; it holds content, which is why capturing is opt-in.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from streamwatch.core.capture import CaptureHeader, encode_end, encode_header, encode_read
from streamwatch.core.record import CloseCause, Outcome, StreamRecord
from streamwatch.metricspec import (
    CAPTURE_BACKLOG,
    CAPTURE_FAILED,
    CAPTURE_NO_ROOM,
    CAPTURE_SAVED,
    CAPTURE_SKIPPED,
    CAPTURE_TOO_LARGE,
)

log = structlog.get_logger("streamwatch.capture")

#: Reads queued for the writer thread, in bytes, over all streams: 8 MiB is a couple of seconds of
#: a slow disk at a busy sidecar's throughput; past it captures are abandoned, never the stream.
MAX_BACKLOG_BYTES = 8 << 20
#: Bytes the writer buffers per open capture before a ``write`` syscall: one per read made the
#: writer thread, which shares the GIL with the relaying loop, cost far more than the encoding.
_WRITE_BUFFER = 8 << 10  # x open captures (max_streams): 8 MiB at 1024
#: Seconds ``close`` waits for the writer to finish the queue at shutdown (a hung disk must not
#: hold the drain).
CLOSE_TIMEOUT_S = 5.0

_FINAL = re.compile(r"^capture-\d{8}T\d{6}\.\d{6}Z-[a-z_]+-\d+-\d+(-[A-Za-z0-9_-]*)?\.jsonl$")
_PARTIAL = re.compile(r"^\.partial-(\d+)-\d+\.jsonl$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_ID_CHARS = 48  # of the sanitized request id in a file name


def safe_name_part(text: str) -> str:
    """``text`` reduced to characters safe in any file name (no dot, no separator), capped."""
    return _UNSAFE.sub("_", text)[:_ID_CHARS].strip("_")


def keeps(record: StreamRecord) -> bool:
    """Whether ``--capture-keep problems`` keeps this stream."""
    return record.outcome is not Outcome.COMPLETED or bool(record.stalls) or record.analysis_failed


@dataclass(frozen=True, slots=True)
class _Read:
    t_ns: int  # since the request arrived
    data: bytes


@dataclass(frozen=True, slots=True)
class _Ended:
    end_ns: int  # since the request arrived
    cause: CloseCause
    outcome: Outcome
    keep: bool


@dataclass(frozen=True, slots=True)
class _Abandoned:
    result: str  # one of metricspec.CAPTURE_RESULTS


_Message = _Read | _Ended | _Abandoned | None  # None: the stream opened


class StreamCapture:
    """One stream's capture. ``feed`` and ``close`` run on the event loop and only queue; the
    writer thread owns the file. ``ended`` is set once nothing more may be queued."""

    __slots__ = ("_recorder", "ended", "file", "header", "partial", "request_id", "size",
                 "t_request_ns")  # fmt: skip

    def __init__(
        self, recorder: Recorder, header: CaptureHeader, t_request_ns: int, request_id: str
    ) -> None:
        self._recorder = recorder
        self.header = header
        self.t_request_ns = t_request_ns
        self.request_id = request_id
        self.ended = False
        self.partial: Path | None = None  # the writer thread's, from here down
        self.file: BinaryIO | None = None
        self.size = 0

    def feed(self, chunk: bytes, at_ns: int) -> None:
        """A read the client has already been sent."""
        if not self.ended:
            self._recorder.submit(self, _Read(at_ns - self.t_request_ns, chunk))

    def close(self, record: StreamRecord) -> None:
        """The stream ended: keep the capture or delete it, by its record."""
        if not self.ended:
            self.ended = True
            keep = self._recorder.keep_all or keeps(record)
            end_ns = max(0, record.t_end_ns - self.t_request_ns)
            self._recorder.submit(self, _Ended(end_ns, record.close_cause, record.outcome, keep))


@dataclass(frozen=True, slots=True)
class RecorderLimits:
    """The caps of one process's captures, in bytes of file."""

    max_stream_bytes: int
    max_total_bytes: int


class Recorder:
    """Every capture of one process: the bounded queue, the writer thread, the directory's budget.

    ``count(result)`` is called once per capture, from the writer thread, with how it ended.
    """

    def __init__(
        self,
        directory: Path,
        limits: RecorderLimits,
        *,
        keep_all: bool,
        count: Callable[[str], None],
    ) -> None:
        self.directory = directory
        self.limits = limits
        self.keep_all = keep_all
        self._count = count
        self._queue: queue.SimpleQueue[tuple[StreamCapture, _Message] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._backlog = 0  # bytes of queued reads
        self._seq = 0
        self._pid = os.getpid()
        self._kept: deque[tuple[Path, int]] = deque()  # oldest first
        self._total = 0  # bytes of kept captures and open partial files
        self._adopt()
        self._thread = threading.Thread(target=self._run, name="streamwatch-capture", daemon=True)
        self._thread.start()

    # -- event loop side ---------------------------------------------------------------------------

    def open(self, header: CaptureHeader, t_request_ns: int, request_id: str) -> StreamCapture:
        """Start capturing a stream whose response headers just arrived."""
        capture = StreamCapture(self, header, t_request_ns, request_id)
        self._queue.put((capture, None))
        return capture

    def submit(self, capture: StreamCapture, message: _Read | _Ended) -> None:
        """Queue ``message`` for the writer; if the reads queued would pass
        :data:`MAX_BACKLOG_BYTES`, abandon the capture instead (the disk is behind)."""
        if type(message) is _Read:
            size = len(message.data)
            with self._lock:
                fits = self._backlog + size <= MAX_BACKLOG_BYTES
                if fits:
                    self._backlog += size
            if not fits:
                capture.ended = True
                self._queue.put((capture, _Abandoned(CAPTURE_BACKLOG)))
                return
        self._queue.put((capture, message))

    @property
    def backlog_bytes(self) -> int:
        """Bytes of reads queued for the writer (at most :data:`MAX_BACKLOG_BYTES`)."""
        return self._backlog

    def close(self) -> None:
        """Finish the queue (waiting at most :data:`CLOSE_TIMEOUT_S`) and stop the writer."""
        self._queue.put(None)
        self._thread.join(CLOSE_TIMEOUT_S)

    # -- writer thread -----------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Count the captures already in the directory towards the budget; delete the partial
        files of processes that no longer run (a crash mid-stream)."""
        for path in sorted(self.directory.iterdir()):
            partial = _PARTIAL.match(path.name)
            if partial is not None and not _alive(int(partial.group(1))):
                _unlink(path)
            elif _FINAL.match(path.name):
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                self._kept.append((path, size))
                self._total += size
        self._make_room(0)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            capture, message = item
            if type(message) is _Read:
                with self._lock:
                    self._backlog -= len(message.data)
            if capture.partial is None and message is not None:
                continue  # its capture already ended (failed, too large, no room)
            try:
                self._handle(capture, message)
            except OSError as exc:
                self._give_up(capture, CAPTURE_FAILED, exc)

    def _handle(self, capture: StreamCapture, message: _Message) -> None:
        if message is None:
            self._seq += 1
            capture.partial = self.directory / f".partial-{self._pid}-{self._seq}.jsonl"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(capture.partial, flags, 0o600)
            capture.file = os.fdopen(fd, "wb", buffering=_WRITE_BUFFER)
            self._write(capture, encode_header(capture.header))
        elif type(message) is _Read:
            self._write(capture, encode_read(message.t_ns, message.data))
        elif type(message) is _Abandoned:
            self._give_up(capture, message.result, None)
        elif type(message) is _Ended:
            self._end(capture, message)

    def _write(self, capture: StreamCapture, line: bytes) -> None:
        if capture.file is None:
            return
        if capture.size + len(line) > self.limits.max_stream_bytes:
            self._give_up(capture, CAPTURE_TOO_LARGE, None)
            return
        if not self._make_room(len(line)):
            self._give_up(capture, CAPTURE_NO_ROOM, None)
            return
        capture.file.write(line)
        capture.size += len(line)
        self._total += len(line)

    def _make_room(self, size: int) -> bool:
        """Delete the oldest kept captures until ``size`` more bytes fit the budget."""
        while self._total + size > self.limits.max_total_bytes and self._kept:
            path, kept = self._kept.popleft()
            self._total -= kept
            _unlink(path)
            log.info("capture.rotated", file=path.name, bytes=kept)
        return self._total + size <= self.limits.max_total_bytes

    def _end(self, capture: StreamCapture, ended: _Ended) -> None:
        if not ended.keep:
            self._discard(capture)
            self._count(CAPTURE_SKIPPED)
            return
        self._write(capture, encode_end(ended.end_ns, ended.cause))
        if capture.file is None or capture.partial is None:
            return  # the end line did not fit: given up and counted
        file, capture.file = capture.file, None
        file.close()
        now_ns = time.time_ns()  # one clock read: two could straddle a second and misorder names
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 1_000_000_000))
        micros = now_ns // 1000 % 1_000_000
        rid = safe_name_part(capture.request_id)
        pid_seq = capture.partial.stem.removeprefix(".partial-")
        name = f"capture-{stamp}.{micros:06d}Z-{ended.outcome.value}-{pid_seq}"
        final = self.directory / f"{name}{'-' + rid if rid else ''}.jsonl"
        os.rename(capture.partial, final)
        capture.partial = None
        self._kept.append((final, capture.size))
        self._count(CAPTURE_SAVED)
        log.info("capture.saved", request=capture.request_id, file=final.name, bytes=capture.size)

    def _discard(self, capture: StreamCapture) -> None:
        file, capture.file = capture.file, None
        if file is not None:
            with suppress(OSError):  # a failed flush: the file is deleted anyway
                file.close()
        if capture.partial is not None:
            _unlink(capture.partial)
            capture.partial = None
        self._total -= capture.size
        capture.size = 0

    def _give_up(self, capture: StreamCapture, result: str, exc: OSError | None) -> None:
        """End one capture (never the stream): delete its partial file, count and log why."""
        capture.ended = True
        with suppress(OSError):
            self._discard(capture)
        capture.partial = None
        self._count(result)
        if exc is not None:
            log.warning(
                "capture.failed",
                request=capture.request_id,
                error=os.strerror(exc.errno) if exc.errno else type(exc).__name__,
            )
        else:
            log.info("capture.abandoned", request=capture.request_id, reason=result)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("capture.delete_failed", file=path.name, error=exc.strerror)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
