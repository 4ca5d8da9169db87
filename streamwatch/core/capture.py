"""The streamwatch capture format: one response body with the arrival time of every read.

A capture is JSON lines, so it survives copy-paste into a ticket and ``grep``:

1. a header ``{"streamwatch_capture": 1, "method", "path", "status", "content_type",
   "request_model"}`` (the path never carries its query string: queries may hold keys);
2. one line per upstream read, ``{"t_ns": <ns since the request>, "b64": <base64 bytes>}``;
3. optionally a last line ``{"end_ns": <ns since the request>, "close_cause": <CloseCause>}``.

Only response body bytes are kept: no request body, no headers, so no credentials. Pure encode and
decode functions; whoever writes or reads the file does the I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from streamwatch.core.limits import MAX_PATH_CHARS
from streamwatch.core.record import CloseCause

FORMAT_VERSION = 1


class CaptureError(ValueError):
    """The input is not a streamwatch capture (or a damaged one); the message says where."""


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    """What the first line of a capture says about the exchange."""

    method: str
    path: str
    status: int
    content_type: str | None
    request_model: str | None = None


@dataclass(frozen=True, slots=True)
class Capture:
    """A decoded capture: the header, every read with its offset, and how the stream ended."""

    header: CaptureHeader
    reads: tuple[tuple[int, bytes], ...]
    end_ns: int | None
    close_cause: CloseCause | None


def encode_header(header: CaptureHeader) -> bytes:
    """The first line of a capture."""
    return (
        orjson.dumps(
            {
                "streamwatch_capture": FORMAT_VERSION,
                "method": header.method,
                "path": header.path.partition("?")[0][:MAX_PATH_CHARS],
                "status": header.status,
                "content_type": header.content_type,
                "request_model": header.request_model,
            }
        )
        + b"\n"
    )


def encode_read(t_ns: int, data: bytes) -> bytes:
    """One read, ``t_ns`` after the request arrived."""
    return orjson.dumps({"t_ns": t_ns, "b64": base64.b64encode(data).decode("ascii")}) + b"\n"


def encode_end(end_ns: int, cause: CloseCause) -> bytes:
    """The closing line: when and why the stream ended."""
    return orjson.dumps({"end_ns": end_ns, "close_cause": cause.value}) + b"\n"


def looks_like_capture(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts a capture."""
    return head.lstrip()[:40].startswith(b'{"streamwatch_capture"')


def decode(lines: Iterable[bytes]) -> Capture:
    """Parse a whole capture; raises :class:`CaptureError` naming the first bad line."""
    header: CaptureHeader | None = None
    reads: list[tuple[int, bytes]] = []
    end_ns: int | None = None
    cause: CloseCause | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise CaptureError(f"line {number}: not JSON") from None
        if not isinstance(obj, dict):
            raise CaptureError(f"line {number}: expected a JSON object")
        if header is None:
            header = _header(obj, number)
        elif "t_ns" in obj:
            reads.append(_read(obj, number))
        elif "end_ns" in obj:
            end_ns, cause = _end(obj, number)
        else:
            raise CaptureError(f"line {number}: neither a read nor the end line")
    if header is None:
        raise CaptureError("empty capture")
    return Capture(header, tuple(reads), end_ns, cause)


def _header(obj: dict[str, object], number: int) -> CaptureHeader:
    if obj.get("streamwatch_capture") != FORMAT_VERSION:
        raise CaptureError(f"line {number}: not a version {FORMAT_VERSION} streamwatch capture")
    status = obj.get("status")
    path = obj.get("path")
    method = obj.get("method")
    content_type = obj.get("content_type")
    model = obj.get("request_model")
    if not isinstance(status, int) or not isinstance(path, str) or not isinstance(method, str):
        raise CaptureError(f"line {number}: header needs method, path and status")
    return CaptureHeader(
        method=method,
        path=path[:MAX_PATH_CHARS],
        status=status,
        content_type=content_type if isinstance(content_type, str) else None,
        request_model=model if isinstance(model, str) else None,
    )


def _read(obj: dict[str, object], number: int) -> tuple[int, bytes]:
    t_ns, b64 = obj.get("t_ns"), obj.get("b64")
    if not isinstance(t_ns, int) or t_ns < 0 or not isinstance(b64, str):
        raise CaptureError(f"line {number}: a read needs t_ns >= 0 and b64")
    try:
        return t_ns, base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise CaptureError(f"line {number}: b64 is not base64") from None


def _end(obj: dict[str, object], number: int) -> tuple[int, CloseCause]:
    end_ns, cause = obj.get("end_ns"), obj.get("close_cause")
    if not isinstance(end_ns, int) or not isinstance(cause, str):
        raise CaptureError(f"line {number}: the end line needs end_ns and close_cause")
    try:
        return end_ns, CloseCause(cause)
    except ValueError:
        raise CaptureError(f"line {number}: unknown close_cause {cause[:40]!r}") from None
