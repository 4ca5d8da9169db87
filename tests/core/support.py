"""Helpers shared by the tests: chunking the same bytes many ways, corpus parameters, and the one
builder of hand-made OpenAI chat chunks (complete streams come from the simulator's renderer)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.conftest import find_corpus

FIXTURE_STREAMS = Path(__file__).resolve().parent.parent / "fixtures" / "streams"


def chat_chunk(
    delta: Mapping[str, Any] | None = None,
    finish: str | None = None,
    *,
    usage: Mapping[str, Any] | None = None,
    model: str = "gpt-4o",
    eol: str = "\n",
) -> bytes:
    """One OpenAI chat completion chunk as an SSE event; with ``usage``, the usage-only last chunk
    (no choices), as ``stream_options.include_usage`` sends it. ``eol`` ends the event's lines."""
    payload: dict[str, Any] = {
        "id": "chatcmpl-t",
        "object": "chat.completion.chunk",
        "model": model,
    }
    if usage is not None:
        payload |= {"choices": [], "usage": dict(usage)}
    else:
        choice = {"index": 0, "delta": dict(delta or {}), "finish_reason": finish}
        payload["choices"] = [choice]
    return f"data: {json.dumps(payload, ensure_ascii=False)}{eol}{eol}".encode()


def fixed(raw: bytes, size: int) -> list[bytes]:
    """``raw`` in reads of ``size`` bytes (the last one shorter)."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def at_cuts(raw: bytes, cuts: list[int]) -> list[bytes]:
    """``raw`` split at the given offsets (any order, duplicates allowed: empty reads are legal)."""
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def sse_events(raw: bytes) -> Iterator[bytes]:
    """``raw`` split after each blank line: one SSE event per read, as real upstreams send them."""
    start, i, line_empty = 0, 0, True
    while i < len(raw):
        byte = raw[i]
        i += 1
        if byte not in (0x0A, 0x0D):
            line_empty = False
            continue
        if byte == 0x0D and raw[i : i + 1] == b"\n":
            i += 1
        if line_empty:
            yield raw[start:i]
            start = i
        line_empty = True
    if start < len(raw):
        yield raw[start:]


def frame_reads(raw: bytes, framing: str) -> list[bytes]:
    """``raw`` split one frame per read, as real upstreams send them, for any framing."""
    if framing == "ndjson":
        reads = [line + b"\n" for line in raw.split(b"\n")]
        reads[-1] = reads[-1][:-1]
    elif framing == "aws_eventstream":
        reads, pos = [], 0
        while pos + 4 <= len(raw):
            size = max(int.from_bytes(raw[pos : pos + 4], "big"), 1)
            reads.append(raw[pos : pos + size])
            pos += size
        reads.append(raw[pos:])
    elif framing == "json_array":  # Gemini writes "[{...}", then ",\r\n{...}" per chunk, then "]"
        reads = re.split(rb"(?=\r?\n?,\r?\n?\{)", raw)
    else:
        reads = list(sse_events(raw))
    return [read for read in reads if read]


def cuts_for(raw: bytes) -> st.SearchStrategy[list[int]]:
    """Up to 24 cut points anywhere in ``raw``, biased towards many small reads."""
    return st.lists(st.integers(0, len(raw)), max_size=24)


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda raw: [raw],
    "1-byte": lambda raw: fixed(raw, 1),
    "2-bytes": lambda raw: fixed(raw, 2),
    "7-bytes": lambda raw: fixed(raw, 7),
    "64-bytes": lambda raw: fixed(raw, 64),
    "1KiB": lambda raw: fixed(raw, 1024),
    "per-event": lambda raw: list(sse_events(raw)),
}


def corpus_params(load: Callable[[Path], list[Any]], ids: Callable[[Any], str]) -> list[Any]:
    """Parameters from the corpus, or one placeholder when it is absent.

    Tests using these must request the ``corpus_dir`` fixture (``usefixtures`` on the class), which
    skips the placeholder with the reason, or fails it in CI.
    """
    root = find_corpus()
    try:
        items = load(root)
    except FileNotFoundError:
        items = []
    if not items:  # the test's ``corpus_dir`` fixture skips it (fails it in CI) with the reason
        return [pytest.param(None, id=f"no-corpus-at-{root}")]
    return [pytest.param(item, id=ids(item)) for item in items]


def load_sse_cases(root: Path) -> list[dict[str, Any]]:
    return list(json.loads((root / "sse-spec" / "cases.json").read_text("utf-8")))


def load_llm_streams(root: Path) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(provider/name, raw body, expected) for every stream of ``llm-streams``."""
    return _load_streams(root / "llm-streams")


def load_provider_streams(root: Path) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(provider/name, raw body, expected) for every stream of ``provider-streams`` (the formats
    beyond the three SSE APIs: Gemini, Bedrock, Ollama, Cohere v2, legacy completions)."""
    return _load_streams(root / "provider-streams", prefix="provider-streams/")


def _load_streams(directory: Path, prefix: str = "") -> list[tuple[str, bytes, dict[str, Any]]]:
    out = []
    for expected_path in sorted(directory.glob("*/*.expected.json")):
        expected = json.loads(expected_path.read_text("utf-8"))
        raw = (expected_path.parent / expected["file"]).read_bytes()
        out.append((f"{prefix}{expected_path.parent.name}/{expected['file']}", raw, expected))
    return out
