"""Incremental decoder for AWS event-stream binary framing (``application/vnd.amazon.eventstream``).

Each message: total length (4 bytes, big-endian), headers length (4), CRC32 of those 8 bytes,
headers, payload, CRC32 of everything before it. Used by Bedrock ``ConverseStream`` and
``InvokeModelWithResponseStream`` (reference: botocore ``eventstream.py``).

Sans-IO and hostile-input safe: both CRCs are verified; a message whose message CRC (or headers) is
wrong is skipped by its length, which the valid prelude CRC vouches for; a prelude that fails its
CRC or announces impossible lengths leaves no trustworthy boundary, so decoding stops there for
good (the bytes still reach the client; they are counted, not analyzed). A message larger than
``max_event_bytes`` is skipped as it streams past, never buffered, and reported as
:class:`~streamwatch.core.sse.OversizeEventDropped`. Memory stays under the cap plus one read.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from streamwatch.core.sse import MAX_EVENT_BYTES, OversizeEventDropped

_PRELUDE = 12  # total length, headers length, prelude CRC
_MIN_MESSAGE = _PRELUDE + 4  # no headers, no payload, message CRC
_PRELUDE_FORMAT = struct.Struct(">III")
_CRC = struct.Struct(">I")
# Header value types (botocore eventstream.py): fixed sizes, or a 2-byte length prefix.
_FIXED_SIZE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_BYTES, _STRING = 6, 7


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    """One verified message: its string headers (others are dropped) and its raw payload."""

    headers: dict[str, str]
    payload: bytes

    @property
    def message_type(self) -> str:
        """``event``, ``exception`` or ``error`` (``:message-type``; ``event`` when absent)."""
        return self.headers.get(":message-type", "event")


@dataclass(frozen=True, slots=True)
class MessageCorrupt:
    """A message failed verification; ``reason`` is ``message_crc``, ``headers``, ``prelude_crc``
    or ``length``. After the last two, nothing more of the body is decoded."""

    reason: str


@dataclass(frozen=True, slots=True)
class BytesLeftOver:
    """Input ended inside a message, or after decoding stopped: ``size`` bytes were not decoded."""

    size: int


EventStreamItem = EventStreamMessage | MessageCorrupt | OversizeEventDropped


def _headers(raw: bytes) -> dict[str, str] | None:
    """String headers of a message, or None if the header block is malformed."""
    headers: dict[str, str] = {}
    pos, end = 0, len(raw)
    while pos < end:
        name_len = raw[pos]
        pos += 1
        name = raw[pos : pos + name_len]
        pos += name_len
        if len(name) != name_len or pos >= end:
            return None
        kind = raw[pos]
        pos += 1
        if kind in _FIXED_SIZE:
            pos += _FIXED_SIZE[kind]
        elif kind in (_BYTES, _STRING):
            if pos + 2 > end:
                return None
            size = int.from_bytes(raw[pos : pos + 2], "big")
            pos += 2
            if kind == _STRING and pos + size <= end:
                headers[name.decode("utf-8", "replace")] = raw[pos : pos + size].decode(
                    "utf-8", "replace"
                )
            pos += size
        else:
            return None
        if pos > end:
            return None
    return headers


class EventStreamDecoder:
    """Turns arbitrary byte chunks into event-stream messages; any split gives the same items."""

    __slots__ = ("_buffer", "_max", "_skip", "_stopped")

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversize message still to pass by
        self._stopped = 0  # bytes received after an untrustworthy prelude (0: decoding)

    def feed(self, chunk: bytes) -> list[EventStreamItem]:
        out: list[EventStreamItem] = []
        if self._stopped:
            self._stopped += len(chunk)
            return out
        if self._skip:
            passed = min(self._skip, len(chunk))
            self._skip -= passed
            chunk = chunk[passed:]
        if not chunk:
            return out
        buffer = self._buffer
        buffer += chunk
        pos = 0
        while len(buffer) - pos >= _PRELUDE:
            total, headers_len, prelude_crc = _PRELUDE_FORMAT.unpack_from(buffer, pos)
            if zlib.crc32(buffer[pos : pos + 8]) != prelude_crc:
                self._stop(out, "prelude_crc", len(buffer) - pos)
                return out
            if total < _MIN_MESSAGE or headers_len > total - _MIN_MESSAGE:
                self._stop(out, "length", len(buffer) - pos)
                return out
            if total > self._max:
                out.append(OversizeEventDropped(total))
                available = len(buffer) - pos
                if available >= total:
                    pos += total
                    continue
                self._skip = total - available
                pos = len(buffer)
                break
            if len(buffer) - pos < total:
                break
            message = bytes(buffer[pos : pos + total])
            pos += total
            out.append(self._message(message, headers_len))
        del buffer[:pos]
        return out

    @staticmethod
    def _message(message: bytes, headers_len: int) -> EventStreamMessage | MessageCorrupt:
        (crc,) = _CRC.unpack_from(message, len(message) - 4)
        if zlib.crc32(message[:-4]) != crc:
            return MessageCorrupt("message_crc")
        headers = _headers(message[_PRELUDE : _PRELUDE + headers_len])
        if headers is None:
            return MessageCorrupt("headers")
        return EventStreamMessage(headers, message[_PRELUDE + headers_len : -4])

    def _stop(self, out: list[EventStreamItem], reason: str, remaining: int) -> None:
        out.append(MessageCorrupt(reason))
        self._buffer.clear()
        self._stopped = remaining

    def close(self) -> list[BytesLeftOver]:
        """End of input: report bytes that never formed a message (a cut, or after a stop)."""
        left = self._stopped or len(self._buffer) + self._skip
        self._buffer.clear()
        self._stopped = self._skip = 0
        return [BytesLeftOver(left)] if left else []
