"""``streamwatch analyze FILE``: the verdict the proxy would have logged, for a stream on disk.

Reads a raw response body as saved by ``curl -N`` (SSE, Ollama NDJSON, a Bedrock event stream, a
Gemini JSON array: the framing and API are sniffed from the bytes), a streamwatch capture (written
by ``serve --capture-dir``, with the arrival time of every read) or a HAR file (browser dev tools,
mitmproxy), runs the same sans-IO analyzer as the proxy, and prints the same fields as the
``stream.<outcome>`` log line. Timings are reported only where the file has them: a capture has
every read's time (TTFT and the gap distribution), a HAR entry only its time to first byte and
total time, a raw body none.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from streamwatch.core.analyzer import AnalyzerConfig, StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.capture import CaptureError, decode, looks_like_capture
from streamwatch.core.events import OutputReceived
from streamwatch.core.record import CloseCause, StreamRecord
from streamwatch.core.request import select_api
from streamwatch.core.sniff import sniff_api
from streamwatch.export.logs import stream_fields

MAX_INPUT_BYTES = 1 << 30  # a capture bigger than this is not a ticket attachment
_NS_PER_MS = 1_000_000
_TIMING_FIELDS = ("ttfb_s", "ttft_s", "max_gap_s", "tokens_per_second", "duration_s", "stalled_s")
_UNTIMED = {"ttft_s", "max_gap_s", "tokens_per_second", "stalled_s", "stalls"}


class InputError(Exception):
    """The file is none of the formats ``analyze`` reads; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Source:
    """One stream found in the input: its reads (offset from the request, bytes) and context.

    ``timing`` says what the offsets mean: ``reads`` (every read's arrival, from a capture),
    ``ttfb`` (only the first byte's time is known, HAR) or ``none`` (a raw body).
    """

    kind: str
    api: Api
    path: str | None
    reads: tuple[tuple[int, bytes], ...]
    timing: str
    end_ns: int
    cause: CloseCause
    request_model: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The analyzer's record for one source and the gaps it observed."""

    source: Source
    record: StreamRecord
    gaps_ns: tuple[int, ...]


def _api(path: str | None, content_type: str | None, body: bytes, forced: Api | None) -> Api:
    if forced is not None:
        return forced
    if path is not None:
        chosen = select_api(path, content_type or "text/event-stream")
        if chosen is not None and chosen is not Api.SSE:
            return chosen
    return sniff_api(body)


def _from_capture(raw: bytes, forced: Api | None) -> list[Source]:
    capture = decode(raw.splitlines())
    header = capture.header
    body_head = b"".join(data for _, data in capture.reads[:64])
    end = (
        capture.end_ns
        if capture.end_ns is not None
        else max((t for t, _ in capture.reads), default=0)
    )
    return [
        Source(
            kind="capture",
            api=_api(header.path, header.content_type, body_head, forced),
            path=header.path,
            reads=capture.reads,
            timing="reads",
            end_ns=end,
            cause=capture.close_cause or CloseCause.UPSTREAM_EOF,
            request_model=header.request_model,
        )
    ]


def _har_ms(timings: dict[str, Any], *names: str) -> float:
    """Sum of HAR timing phases in ms; -1 (not applicable) and missing count as 0."""
    total = 0.0
    for name in names:
        value = timings.get(name)
        if isinstance(value, int | float) and value > 0:
            total += float(value)
    return total


def _har_body(content: dict[str, Any]) -> bytes | None:
    text = content.get("text")
    if not isinstance(text, str):
        return None
    if content.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            return None
    return text.encode("utf-8")


def _from_har(document: dict[str, Any], forced: Api | None) -> list[Source]:
    log = document.get("log")
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(entries, list):
        raise InputError("a HAR file needs log.entries")
    sources = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        request, response = entry.get("request") or {}, entry.get("response") or {}
        content = response.get("content") or {}
        body = _har_body(content) if isinstance(content, dict) else None
        if not body:
            continue
        url = str(request.get("url", ""))
        path = "/" + url.split("://", 1)[-1].partition("/")[2].partition("?")[0]
        mime = content.get("mimeType") if isinstance(content.get("mimeType"), str) else None
        if forced is None and select_api(path, mime) is None and sniff_api(body) is Api.SSE:
            continue  # not an event stream: a page, an image, a plain JSON answer
        found = entry.get("timings")
        timings: dict[str, Any] = found if isinstance(found, dict) else {}
        ttfb = _har_ms(timings, "blocked", "dns", "connect", "send", "wait")
        total = ttfb + _har_ms(timings, "receive")
        sources.append(
            Source(
                kind="har",
                api=_api(path, mime, body, forced),
                path=path,
                reads=((int(ttfb * _NS_PER_MS), body),),
                timing="ttfb",
                end_ns=int(total * _NS_PER_MS),
                cause=CloseCause.UPSTREAM_EOF,
            )
        )
    if not sources:
        raise InputError("the HAR file holds no response body that is an event stream")
    return sources


def load(raw: bytes, *, forced: Api | None = None, path: str | None = None) -> list[Source]:
    """Every stream in ``raw``, whatever its container; raises :class:`InputError` if none."""
    if not raw.strip():
        raise InputError("the file is empty")
    if looks_like_capture(raw):
        try:
            return _from_capture(raw, forced)
        except CaptureError as exc:
            raise InputError(f"damaged streamwatch capture: {exc}") from None
    if raw.lstrip()[:1] == b"{":
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict) and "log" in document:
            return _from_har(document, forced)
    api = _api(path, None, raw, forced)
    return [Source("body", api, path, ((0, raw),), "none", 0, CloseCause.UPSTREAM_EOF)]


def analyze(source: Source, config: AnalyzerConfig | None = None) -> Verdict:
    """Replay ``source`` through the analyzer at its recorded times."""
    analyzer = StreamAnalyzer(source.api, 0, request_model=source.request_model, config=config)
    gaps: list[int] = []
    for at, data in source.reads:
        gaps.extend(
            event.gap_ns
            for event in analyzer.feed(data, at)
            if type(event) is OutputReceived and event.gap_ns is not None
        )
    last = max((t for t, _ in source.reads), default=0)
    _, record = analyzer.close(max(source.end_ns, last), source.cause)
    return Verdict(source, record, tuple(gaps))


def _quantile(sorted_ns: Sequence[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return round(sorted_ns[index] / 1e9, 6)


def report(verdict: Verdict) -> dict[str, Any]:
    """The JSON document for one stream: where it came from, the log line's fields, the gaps."""
    source, record = verdict.source, verdict.record
    fields = stream_fields(record)
    if source.timing != "reads":
        for name in _UNTIMED:
            fields[name] = None
    if source.timing == "none":
        fields["ttfb_s"] = fields["duration_s"] = None
    gaps = sorted(verdict.gaps_ns)
    return {
        "source": {"kind": source.kind, "path": source.path, "timing": source.timing},
        "verdict": fields,
        "gaps": None
        if source.timing != "reads" or not gaps
        else {
            "count": len(gaps),
            "p50_s": _quantile(gaps, 0.5),
            "p90_s": _quantile(gaps, 0.9),
            "p99_s": _quantile(gaps, 0.99),
            "max_s": round(gaps[-1] / 1e9, 6),
        },
    }


def render_text(doc: dict[str, Any], out: TextIO) -> None:
    """The human summary of one :func:`report` document."""
    source, v, gaps = doc["source"], doc["verdict"], doc["gaps"]
    where = f" {source['path']}" if source["path"] else ""
    print(f"{source['kind']}{where}: {v['api']} {v['model'] or '-'}", file=out)
    print(
        f"  outcome {v['outcome']}  finish {','.join(v['finish_reasons']) or '-'}"
        f"  terminal {v['terminal_frame'] or '-'}",
        file=out,
    )
    tokens = v["output_tokens"]
    estimated = " (estimated)" if v["output_tokens_estimated"] else ""
    print(
        f"  output events {v['output_events']}  output tokens {tokens}{estimated}"
        f"  input tokens {v['input_tokens'] if v['input_tokens'] is not None else '-'}"
        f"  tool calls {v['tool_calls']}",
        file=out,
    )
    if v["error_frames"]:
        print(f"  error frames {', '.join(v['error_frames'])}", file=out)
    if v["malformed_frames"] or v["undispatched_tail"]:
        print(
            f"  malformed frames {v['malformed_frames']}  undispatched tail"
            f" {v['undispatched_tail']}",
            file=out,
        )
    timed = [f"{name} {v[name]}" for name in _TIMING_FIELDS if v.get(name) is not None]
    print("  " + ("  ".join(timed) if timed else "timings: none in this file"), file=out)
    if gaps:
        print(
            f"  gaps n={gaps['count']} p50 {gaps['p50_s']}s p90 {gaps['p90_s']}s"
            f" p99 {gaps['p99_s']}s max {gaps['max_s']}s",
            file=out,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch analyze",
        description="Verdict on a captured stream: a raw response body (SSE, NDJSON, Bedrock "
        "event stream, Gemini JSON array), a streamwatch capture or a HAR file.",
    )
    parser.add_argument("file", help="the file to read ('-' for standard input)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    parser.add_argument(
        "--api",
        choices=[api.value for api in Api],
        default=None,
        help="the stream's API (default: from the path, else from the frames)",
    )
    parser.add_argument(
        "--path", default=None, help="request path the body answered, e.g. /v1/messages"
    )
    return parser


def main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Exit 0 with a verdict per stream; 2 when the file cannot be read or is no stream."""
    args = build_parser().parse_args(argv)
    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(args.file).open("rb") as handle:
                raw = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        print(f"streamwatch analyze: cannot read {args.file}: {exc.strerror or exc}", file=err)
        return 2
    if len(raw) > MAX_INPUT_BYTES:
        print(f"streamwatch analyze: {args.file} is larger than 1 GiB", file=err)
        return 2
    try:
        sources = load(raw, forced=Api(args.api) if args.api else None, path=args.path)
    except InputError as exc:
        print(f"streamwatch analyze: {args.file}: {exc}", file=err)
        return 2
    docs = [report(analyze(source)) for source in sources]
    if all(d["source"]["kind"] == "body" and d["verdict"]["frames"] == 0 for d in docs):
        print(
            f"streamwatch analyze: {args.file}: no stream found: expected a streamed response "
            "body (SSE, NDJSON, Bedrock event stream, JSON array), a streamwatch capture or a HAR "
            "file",
            file=err,
        )
        return 2
    if args.json:
        out.write(orjson.dumps({"streams": docs}, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for doc in docs:
            render_text(doc, out)
    return 0
