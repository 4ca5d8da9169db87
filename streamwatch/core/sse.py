"""Incremental Server-Sent Events decoder (WHATWG HTML §9.2.6), fed bytes, returning events.

Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Two deliberate differences from a browser's EventSource:

* At end of input the spec silently discards an undispatched block. For a monitor that leftover is
  the evidence of a truncated stream, so :meth:`SSEDecoder.close` reports it as
  :class:`TailDiscarded` (still without dispatching it).
* A block (or a single line) that grows past the decoder's ``max_event_bytes`` (default
  :data:`MAX_EVENT_BYTES`) is dropped and reported as :class:`OversizeEventDropped`, and decoding
  resynchronises at the next blank line. Bad input never
  raises; the decoder's memory never exceeds the cap plus one read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

# A single event larger than this is not a token delta but a runaway upstream (or an attack): a
# stream that never sends a newline must not grow the proxy's memory. 1 MiB is far above the
# largest real frames seen (multi-KiB tool-call arguments, base64 image chunks of ~100 KiB).
MAX_EVENT_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A


class MessageDispatched(NamedTuple):
    """A blank line ended a block whose data buffer was not empty (spec: "dispatch the event").

    ``data`` has its final LF removed; ``last_event_id`` is the stream's last event ID at dispatch
    (None until a valid ``id`` was committed); ``retry`` is a valid ``retry`` of this block, if any.

    A ``NamedTuple``, unlike the other items: one is built per event of every stream, and
    ``tuple.__new__`` builds it for a quarter of what a frozen dataclass's ``__init__`` costs. It is
    as immutable; it also equals a plain tuple of the same values, which no caller compares it with.
    """

    event: str
    data: str
    last_event_id: str | None
    retry: int | None


#: ``MessageDispatched(...)`` without the generated Python ``__new__``'s call: the same instance.
_new_message: Callable[
    [type[MessageDispatched], tuple[str, str, str | None, int | None]], MessageDispatched
] = tuple.__new__


@dataclass(frozen=True, slots=True)
class CommentReceived:
    """A line starting with ``:``; ``text`` has one leading space removed (keep-alives, pings)."""

    text: str


@dataclass(frozen=True, slots=True)
class OversizeEventDropped:
    """A block or line passed the event cap; it was discarded up to the next blank line.

    ``size`` is how much had been buffered when the cap was crossed: a lower bound of the event's
    size that depends on where the reads ended (the only field that may differ between splits).
    """

    size: int


@dataclass(frozen=True, slots=True)
class TailDiscarded:
    """Input ended inside a block: what a lenient parser would have dispatched at EOF.

    ``event_type`` is the pending ``event`` field (None if unset), ``pending_data`` the data buffer
    with its final LF removed, ``unterminated_last_line`` a final line with no line terminator.
    """

    event_type: str | None
    pending_data: str
    unterminated_last_line: str


@dataclass(frozen=True, slots=True)
class FieldIgnored:
    """A line the spec ignores as an unknown field, reported only when asked for.

    Gemini writes a mid-stream error as a bare, pretty-printed JSON object outside any event (corpus
    ERROR_FRAMES.md §4a): under WHATWG rules its lines are unknown fields, so only a decoder that
    reports them lets the interpreter see the error. ``line`` is the whole line, decoded.
    """

    line: str


SSEEvent = MessageDispatched | CommentReceived | OversizeEventDropped | TailDiscarded | FieldIgnored


_KNOWN_FIELDS = frozenset({"data", "event", "id", "retry"})


def _is_retry(value: str) -> bool:
    return value != "" and value.isascii() and value.isdigit()


class SSEDecoder:
    """Turns arbitrary byte chunks into SSE events; any split of the same bytes gives the same events.

    Lines are split on bytes (CR, LF, CRLF) before decoding, never with ``str.splitlines`` (which
    also breaks on U+2028 and friends); UTF-8 never contains 0x0A or 0x0D inside a code point, so a
    complete line always decodes on its own. A CR ending one read and an LF starting the next are
    one line terminator.
    """

    __slots__ = (
        "_at_start",
        "_block_bytes",
        "_data",
        "_event_type",
        "_id_buffer",
        "_last_event_id",
        "_line",
        "_max_event_bytes",
        "_report_ignored",
        "_retry",
        "_skip_lf",
        "_skipping",
        "last_retry",
    )

    def __init__(
        self, *, max_event_bytes: int = MAX_EVENT_BYTES, report_ignored_fields: bool = False
    ) -> None:
        self._max_event_bytes = max_event_bytes
        self._report_ignored = report_ignored_fields
        self._line = bytearray()  # the current, not yet terminated line
        self._at_start = True  # no byte seen yet: a leading BOM may still arrive
        self._skip_lf = False  # the previous read ended in CR
        self._skipping = False  # dropping an oversize block until the next blank line
        self._data: list[str] = []
        self._event_type = ""
        self._block_bytes = 0
        self._retry: int | None = None
        self._id_buffer: str | None = None
        self._last_event_id: str | None = None
        self.last_retry: int | None = None
        """The stream's reconnection time: the last valid ``retry`` seen (spec: event source state)."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode one read; returns the events it completed (often none, sometimes many)."""
        out: list[SSEEvent] = []
        if not chunk:
            return out
        if self._at_start:
            pending = bytes(self._line) + chunk
            if len(pending) < len(_BOM) and _BOM.startswith(pending):
                self._line[:] = pending  # could still become a BOM
                return out
            self._at_start = False
            self._line.clear()
            chunk = pending[3:] if pending.startswith(_BOM) else pending
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if not chunk:
            return out
        # ``_CR`` is an int: ``bytes in bytes`` first tries its needle as an int, and builds and
        # discards a formatted TypeError on every read, ten times the search.
        if not self._line and _CR not in chunk:
            if (
                chunk.startswith(b"data: ")
                and chunk.find(b"\n") == len(chunk) - 2
                and chunk[-1] == _LF
                and not self._data
                and not self._skipping
                and self._block_bytes + len(chunk) - 1 <= self._max_event_bytes
            ):
                # The usual read: exactly one event of one ``data: `` line. What the general path
                # does with it (append the line, dispatch), without the split, loop and calls.
                self._last_event_id = self._id_buffer
                event_type, retry = self._event_type, self._retry
                self._event_type = ""
                self._retry = None
                self._block_bytes = 0
                data = chunk[6:-2].decode("utf-8", "replace")
                out.append(
                    _new_message(
                        MessageDispatched,
                        (event_type or "message", data, self._last_event_id, retry),
                    )
                )
                return out
            self._feed_lf_only(chunk, out)
            return out
        lines = chunk.splitlines(keepends=True)  # bytes.splitlines breaks on CR, LF, CRLF only
        partial = b""
        last = lines[-1]
        if last[-1] not in (_CR, _LF):
            partial = lines.pop()
        elif last[-1] == _CR:
            self._skip_lf = True
        if lines:
            line_buf = self._line
            if line_buf:
                line_buf += lines[0]
                lines[0] = bytes(line_buf)
                line_buf.clear()
            for raw in lines:
                line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
                self._process_line(line, len(raw), out)
        if partial:
            self._extend_partial(partial, out)
        return out

    def _feed_lf_only(self, chunk: bytes, out: list[SSEEvent]) -> None:
        """The common case (LF line ends, no partial line pending), with ``data: `` lines inlined.

        Gives exactly what the general path gives; it only skips work that case does not need.
        """
        lines = chunk.split(b"\n")
        partial = lines.pop()
        data = self._data
        for line in lines:
            if not line and not self._skipping:
                self._dispatch(out)
                data = self._data
                continue
            if line.startswith(b"data: ") and not self._skipping:
                size = self._block_bytes + len(line) + 1
                if size <= self._max_event_bytes:
                    self._block_bytes = size
                    data.append(line[6:].decode("utf-8", "replace"))
                    continue
            self._process_line(line, len(line) + 1, out)
            data = self._data  # a dispatch or a dropped block starts a new buffer
        if partial:
            self._extend_partial(partial, out)

    def _extend_partial(self, part: bytes, out: list[SSEEvent]) -> None:
        """Keep an unterminated line for the next read, unless it has passed the cap."""
        line = self._line
        if self._skipping:
            if not line:
                line += part[:1]  # dropped block: remember only that this line is not blank
            return
        line += part
        if self._block_bytes + len(line) > self._max_event_bytes:
            out.append(OversizeEventDropped(self._block_bytes + len(line)))
            self._drop_block()
            del line[1:]  # keep one byte: this line is not blank, even if its terminator comes next

    def _drop_block(self) -> None:
        self._skipping = True
        self._data = []
        self._event_type = ""
        self._retry = None
        self._block_bytes = 0

    def _process_line(self, line: bytes, size: int, out: list[SSEEvent]) -> None:
        """One complete line, without its terminator; ``size`` counts the terminator too."""
        if not line:
            if self._skipping:
                self._skipping = False
                return
            self._dispatch(out)
            return
        if self._skipping:
            return
        self._block_bytes += size
        if self._block_bytes > self._max_event_bytes:
            out.append(OversizeEventDropped(self._block_bytes))
            self._drop_block()
            return
        text = line.decode("utf-8", "replace")
        self._process_field(text, out)

    def _process_field(self, text: str, out: list[SSEEvent]) -> None:
        colon = text.find(":")
        if colon == 0:
            comment = text[1:]
            out.append(CommentReceived(comment[1:] if comment.startswith(" ") else comment))
            return
        if colon < 0:
            name, value = text, ""
        else:
            name = text[:colon]
            value = text[colon + 1 :]
            if value.startswith(" "):
                value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry" and _is_retry(value):
            self._retry = int(value)
            self.last_retry = self._retry
        elif self._report_ignored and name not in _KNOWN_FIELDS:
            out.append(FieldIgnored(text))
        # any other field name is ignored (spec: "Otherwise: The field is ignored.")

    def _dispatch(self, out: list[SSEEvent]) -> None:
        self._last_event_id = self._id_buffer
        data, event_type, retry = self._data, self._event_type, self._retry
        self._data = []
        self._event_type = ""
        self._retry = None
        self._block_bytes = 0
        if not data:
            return  # an empty data buffer dispatches nothing (but the id above is committed)
        out.append(
            _new_message(
                MessageDispatched,
                (event_type or "message", "\n".join(data), self._last_event_id, retry),
            )
        )

    @property
    def last_event_id(self) -> str | None:
        """The committed last event ID (None if no valid ``id`` was ever committed)."""
        return self._last_event_id

    def close(self) -> list[SSEEvent]:
        """End of input: report (never dispatch) a block the stream left unfinished."""
        out: list[SSEEvent] = []
        line = bytes(self._line)
        self._line.clear()
        if self._at_start:
            self._at_start = False
            if line == _BOM[: len(line)]:
                line = b""
        unterminated = "" if self._skipping else line.decode("utf-8", "replace")
        if self._report_ignored and unterminated and not unterminated.startswith(":"):
            name = unterminated.partition(":")[0]
            if name not in _KNOWN_FIELDS:  # could never have formed an event: not a tail
                out.append(FieldIgnored(unterminated))
                unterminated = ""
        if self._data or self._event_type or (unterminated and not unterminated.startswith(":")):
            out.append(
                TailDiscarded(
                    self._event_type or None,
                    "\n".join(self._data),
                    unterminated,
                )
            )
        self._data = []
        self._event_type = ""
        self._skipping = False
        return out
