"""Incremental splitter for a body that is one JSON array written element by element.

Gemini's ``:streamGenerateContent`` without ``alt=sse`` answers ``application/json`` and writes
``[{…}``, then ``,\\r\\n{…}`` per chunk, then ``]``: each element is a complete response chunk the
moment its closing brace arrives, so elements are delivered then, not at the following comma.
Sans-IO like :mod:`streamwatch.core.sse`: any split of the same bytes gives the same items, bad input
never raises, and an element past ``max_event_bytes`` is dropped and reported as
:class:`~streamwatch.core.sse.OversizeEventDropped` while scanning goes on, so memory stays under the
cap plus one read. Only the structure is scanned (strings, escapes, nesting); elements are
parsed by the interpreter. A body that is a bare object instead of an array (an error answered as
``{"error": …}``) is delivered as one element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamwatch.core.sse import MAX_EVENT_BYTES, OversizeEventDropped


@dataclass(frozen=True, slots=True)
class ElementReceived:
    """One complete top-level element of the array (raw JSON text, not parsed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ArrayClosed:
    """The array's closing ``]`` arrived: the body is complete."""


@dataclass(frozen=True, slots=True)
class ArrayLeftOpen:
    """Input ended before the closing ``]`` (``pending`` bytes of an unfinished element were lost)."""

    pending: int


JSONArrayItem = ElementReceived | ArrayClosed | OversizeEventDropped

_WS = b" \t\r\n"
_IN_STRING = re.compile(rb'["\\]')
_STRUCTURE = re.compile(rb'["{}\[\],]')
_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")

# scanner states
_BEFORE = 0  # nothing but whitespace so far
_BETWEEN = 1  # inside the array, between elements
_ELEMENT = 2  # inside an element
_DONE = 3  # after the closing ``]`` (or the end of a bare top-level object)


class JSONArrayDecoder:
    """Splits ``[elem, elem, …]`` into elements as their last byte arrives, whatever the reads."""

    __slots__ = (
        "_depth",
        "_element",
        "_escape",
        "_in_string",
        "_kept",
        "_max",
        "_size",
        "_state",
        "_top_object",
    )

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._state = _BEFORE
        self._element = bytearray()  # the current element's bytes (kept only under the cap)
        self._kept = True  # False while an oversize element is being skipped
        self._size = 0  # bytes of the current element so far
        self._depth = 0  # nesting inside the current element
        self._in_string = False
        self._escape = False  # the previous byte in a string was a backslash
        self._top_object = False  # the body is a bare object, not an array

    def feed(self, chunk: bytes) -> list[JSONArrayItem]:
        out: list[JSONArrayItem] = []
        pos, end = 0, len(chunk)
        while pos < end:
            state = self._state
            if state == _ELEMENT:
                pos = self._scan_element(chunk, pos, out)
            elif state == _DONE:
                break  # anything after the closing bracket is ignored
            else:
                byte = chunk[pos]
                if byte in _WS or (state == _BETWEEN and byte == 0x2C):  # whitespace, ','
                    pos += 1
                elif state == _BEFORE and byte == 0x5B:  # '['
                    self._state = _BETWEEN
                    pos += 1
                elif state == _BETWEEN and byte == 0x5D:  # ']'
                    self._state = _DONE
                    out.append(ArrayClosed())
                    pos += 1
                else:  # an element starts (or, before any '[', the body is a bare value)
                    self._top_object = state == _BEFORE
                    self._state = _ELEMENT
                    self._depth = 0
        return out

    def _scan_element(self, chunk: bytes, pos: int, out: list[JSONArrayItem]) -> int:
        """Scan from ``pos`` until the element ends or the chunk does; returns the next position."""
        start, end = pos, len(chunk)
        while pos < end:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                match = _IN_STRING.search(chunk, pos)
                if match is None:
                    pos = end
                    break
                pos = match.end()
                if chunk[pos - 1] == 0x5C:  # backslash: the next byte is escaped
                    self._escape = True
                else:
                    self._in_string = False
                continue
            match = _STRUCTURE.search(chunk, pos)
            if match is None:
                pos = end
                break
            byte = chunk[match.start()]
            if byte == 0x22:  # '"'
                self._in_string = True
                pos = match.end()
            elif byte in _OPEN:
                self._depth += 1
                pos = match.end()
            elif byte in _CLOSE and self._depth > 0:
                self._depth -= 1
                pos = match.end()
                if self._depth == 0:
                    self._add(chunk[start:pos], out)
                    self._finish(out)
                    return pos
            elif self._depth > 0:  # a ',' inside the element
                pos = match.end()
            else:  # at depth 0 a ',' or ']' ends a scalar (or junk) element; a stray '}' is junk
                pos = match.end() if byte == 0x7D else match.start()
                self._add(chunk[start:pos], out)
                self._finish(out)
                return pos
        self._add(chunk[start:pos], out)
        return pos

    def _add(self, piece: bytes, out: list[JSONArrayItem]) -> None:
        self._size += len(piece)
        if not self._kept:
            return
        if self._size > self._max:
            out.append(OversizeEventDropped(self._size))
            self._kept = False
            self._element.clear()
            return
        self._element += piece

    def _finish(self, out: list[JSONArrayItem]) -> None:
        if self._kept:
            data = bytes(self._element).strip(_WS)
            if data:
                out.append(ElementReceived(data))
        self._element.clear()
        self._kept = True
        self._size = 0
        self._in_string = self._escape = False
        self._state = _DONE if self._top_object else _BETWEEN

    @property
    def closed(self) -> bool:
        """The closing ``]`` (or the end of a bare top-level value) arrived."""
        return self._state == _DONE

    def close(self) -> list[ArrayLeftOpen]:
        """End of input: report an array that never closed (a truncated body)."""
        if self._state in (_DONE, _BEFORE):
            return []
        pending = self._size if self._state == _ELEMENT else 0
        self._state = _DONE
        self._element.clear()
        return [ArrayLeftOpen(pending)]
