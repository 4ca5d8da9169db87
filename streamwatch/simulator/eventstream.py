"""AWS event-stream message encoding (the framing of Bedrock's streaming APIs), for the simulator.

The inverse of :mod:`streamwatch.core.eventstream`: string headers, a payload, and both CRC32s, as
botocore expects them. Only string headers (type 7) are written; Bedrock sends no others.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import orjson

_STRING = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One complete message: prelude, prelude CRC, headers, payload, message CRC."""
    head = b"".join(
        bytes([len(name.encode())])
        + name.encode()
        + bytes([_STRING])
        + struct.pack(">H", len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, body: Mapping[str, Any]) -> bytes:
    """A Bedrock ``event`` message with a JSON payload (ConverseStream events, invoke chunks)."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode_message(headers, orjson.dumps(body))


def chunk(body: Mapping[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: the model-native body, base64 in ``bytes``."""
    return event("chunk", {"bytes": base64.b64encode(orjson.dumps(body)).decode()})


def exception(exception_type: str, message: str) -> bytes:
    """A Bedrock exception message sent after the 200 (``throttlingException``, …)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, orjson.dumps({"message": message}))
