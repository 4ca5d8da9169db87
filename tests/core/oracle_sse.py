"""A deliberately naive WHATWG event-stream parser, used only as a test oracle.

It shares no code or technique with ``streamwatch.core.sse``: it works on the fully decoded text
(one ``str``), splits lines with a regular expression and follows the spec's prose step by step,
including its string-valued data buffer. https://html.spec.whatwg.org/multipage/server-sent-events.html
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class OracleResult:
    """What a conforming parser saw in a whole stream."""

    events: list[tuple[str, str, str | None, int | None]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    final_retry: int | None = None
    final_last_event_id: str | None = None
    pending: tuple[str | None, str, str] | None = None
    """(event type, data buffer minus its final LF, unterminated last line) of a block in progress."""


def parse(raw: bytes) -> OracleResult:
    """Interpret a complete stream (bytes decoded as UTF-8 with replacement)."""
    text = raw.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    *lines, unterminated = _LINE_END.split(text)
    out = OracleResult()
    data, event_type, id_buffer, block_retry = "", "", None, None
    for line in lines:
        if line == "":  # blank line: dispatch
            out.final_last_event_id = id_buffer
            if data:
                out.events.append((event_type or "message", data[:-1], id_buffer, block_retry))
            data, event_type, block_retry = "", "", None
            continue
        if line.startswith(":"):
            out.comments.append(line[1:].removeprefix(" "))
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            block_retry = int(value)
            out.final_retry = block_retry
    if data or event_type or (unterminated and not unterminated.startswith(":")):
        out.pending = (event_type or None, data[:-1], unterminated)
    return out
