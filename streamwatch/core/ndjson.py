"""Incremental newline-delimited JSON splitter (Ollama ``application/x-ndjson``): bytes in, lines out.

Sans-IO like :mod:`streamwatch.core.sse`: any split of the same bytes gives the same lines, bad input
never raises, and a line longer than ``max_event_bytes`` is dropped and reported as
:class:`~streamwatch.core.sse.OversizeEventDropped` (decoding resumes after its newline), so memory
stays under the cap plus one read. The lines are not parsed here: that is the interpreter's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamwatch.core.sse import MAX_EVENT_BYTES, OversizeEventDropped


@dataclass(frozen=True, slots=True)
class LineReceived:
    """One non-blank line, without its LF (or CRLF) terminator."""

    data: bytes


NDJSONItem = LineReceived | OversizeEventDropped


class NDJSONDecoder:
    """Splits a body into non-blank lines. A last line without its newline is delivered by
    :meth:`close` (Ollama's final ``done`` object is a whole line, newline or not)."""

    __slots__ = ("_line", "_max", "_skipping")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._line = bytearray()  # the current, not yet terminated line
        self._skipping = False  # dropping an oversize line until its newline

    def feed(self, chunk: bytes) -> list[NDJSONItem]:
        out: list[NDJSONItem] = []
        if not chunk:
            return out
        lines = chunk.split(b"\n")
        partial = lines.pop()
        for piece in lines:
            line = piece
            if self._line:
                self._line += piece
                line = bytes(self._line)
                self._line.clear()
            if self._skipping:
                self._skipping = False
                continue
            self._emit(line, out)
        if partial:
            self._extend(partial, out)
        return out

    def _extend(self, part: bytes, out: list[NDJSONItem]) -> None:
        if self._skipping:
            return
        self._line += part
        if len(self._line) > self._max:
            out.append(OversizeEventDropped(len(self._line)))
            self._line.clear()
            self._skipping = True

    def _emit(self, line: bytes, out: list[NDJSONItem]) -> None:
        if len(line) > self._max:  # one read carried the whole oversize line
            out.append(OversizeEventDropped(len(line)))
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            out.append(LineReceived(line))

    def close(self) -> list[NDJSONItem]:
        """End of input: a last line without a newline still counts (it may be complete JSON)."""
        out: list[NDJSONItem] = []
        line = bytes(self._line)
        self._line.clear()
        if line and not self._skipping:
            self._emit(line, out)
        self._skipping = False
        return out
