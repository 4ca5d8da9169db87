"""Log lines leave the event loop through a bounded queue; one thread of their own writes them.

A log line written with a blocking ``write()`` on the event loop stalls every stream on it as soon
as the reader of the log pipe stops reading (a stuck log shipper, ``| less``, a container runtime
behind on its log pipe): the kernel holds 64 KiB, then ``write()`` waits for the reader. So the
loop only renders a line and appends it to a bounded queue; a writer thread does the blocking
writes. When the queue is full the line is dropped and counted -- logging is telemetry and never
holds the bytes back -- as HAProxy drops and counts log messages it cannot send (``DroppedLogs``
in ``show info``, ``haproxy_process_dropped_logs_total``) where nginx blocks its worker on the
``write()`` of an access log line. A write that fails (EPIPE: the reader is gone) drops its line
too.

The writer notes drops in the log itself (``log.lines_dropped``, at most one line per
:data:`NOTE_INTERVAL`, written once the output takes lines again), rendered like every other line,
so a shipper that was stuck sees what it missed. At exit the queue is drained for up to
:data:`FLUSH_TIMEOUT`: a normal stop loses no line; a reader that is stuck does not hold the exit.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

#: Seconds the writer waits between two ``log.lines_dropped`` notes.
NOTE_INTERVAL = 10.0
#: Seconds the exit waits for queued lines to be written (a stuck reader does not hold the exit).
FLUSH_TIMEOUT = 5.0

Render = Callable[[dict[str, Any]], str]
"""Renders a note's fields as one log line, in the format of every other line."""


class LogPipe:
    """Log lines from any thread to the file descriptor ``fd``, in order, one ``write()`` each.

    One write per line keeps lines whole when ``--workers`` processes share one pipe (a write of
    at most ``PIPE_BUF`` bytes is atomic). :meth:`put` never blocks.
    """

    def __init__(self, fd: int, capacity: int, render: Render) -> None:
        self._fd = fd
        self._render = render
        # A SimpleQueue, bounded by the one check in ``put``: its put and get are C calls, where
        # ``queue.Queue`` runs a Condition in Python on both threads for every line. Lines put
        # from several threads at once may pass the bound by one each: still bounded.
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._capacity = capacity
        self._lock = threading.Lock()  # drops are counted on the putting and the writing thread
        self._dropped = 0
        self._on_drop: Callable[[int], None] | None = None
        self._noted = 0  # drops the last note covered
        self._noted_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="streamwatch-log", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped so far: the queue was full, or their write failed."""
        return self._dropped

    def count_drops(self, on_drop: Callable[[int], None]) -> None:
        """From now on tell ``on_drop`` of every drop (with how many); it hears those so far at once."""
        with self._lock:
            self._on_drop = on_drop
            if self._dropped:
                on_drop(self._dropped)

    def put(self, line: str) -> None:
        """Queue one rendered line (no newline) for the writer; drop and count it if the queue is full."""
        if self._queue.qsize() < self._capacity:
            self._queue.put(line)
        else:
            self._drop()

    def close(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write what is queued, for up to ``timeout`` seconds; whether every line was written."""
        self._queue.put(None)  # the writer stops there, past every line queued before
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _drop(self) -> None:
        with self._lock:
            self._dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)

    def _run(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=NOTE_INTERVAL)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line and not self._write(line):
                self._drop()
            self._note(final=False)
        self._note(final=True)

    def _note(self, *, final: bool) -> None:
        """A ``log.lines_dropped`` line if lines were dropped since the last one, at most one per
        :data:`NOTE_INTERVAL` (``final``: at exit, whenever)."""
        dropped = self._dropped
        if dropped == self._noted:
            return
        now = time.monotonic()
        if not final and self._noted_at is not None and now - self._noted_at < NOTE_INTERVAL:
            return
        note = {
            "event": "log.lines_dropped",
            "dropped": dropped - self._noted,
            "dropped_total": dropped,
        }
        self._noted, self._noted_at = dropped, now
        self._write(self._render(note))  # a note that cannot be written is not a dropped line

    def _write(self, line: str) -> bool:
        """Write ``line`` and its newline, waiting as long as the reader makes it; whether it was."""
        data = memoryview((line + "\n").encode("utf-8", "backslashreplace"))
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except BlockingIOError:  # a descriptor someone made non-blocking: wait until writable
                select.select([], [self._fd], [])
            except OSError:  # EPIPE (the reader is gone), EBADF
                return False
        return True
