"""A light HTTP/1.1 streaming load client on raw asyncio protocols (no aiohttp client overhead).

Each slot keeps one keep-alive connection and runs streams back to back until the deadline. For
every received read it de-chunks the body, hashes it (sha256, compared with the upstream's digest),
and pulls out every ``"sim_sent_ns":N`` stamp the simulator put in the output events: ``now - N`` is
that chunk's delivery latency (one machine, one monotonic clock).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_STAMP = re.compile(rb'"sim_sent_ns":(\d+)')
_BODY = (
    b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},'
    b'"messages":[{"role":"user","content":"benchmark"}]}'
)


@dataclass(slots=True)
class Shape:
    """One stream's simulator parameters."""

    tokens: int = 100
    gap_ms: int = 20
    ttft_ms: int = 0
    path: str = "/v1/chat/completions"
    extra: dict[str, str] = field(default_factory=dict)

    def request(self, bench_id: str, host: str) -> bytes:
        headers = {
            "Host": host,
            "Content-Type": "application/json",
            "Content-Length": str(len(_BODY)),
            "x-bench-id": bench_id,
            "x-sim-scenario": "normal",
            "x-sim-tokens": str(self.tokens),
            "x-sim-gap-ms": str(self.gap_ms),
            "x-sim-jitter-ms": "0",
            "x-sim-ttft-ms": str(self.ttft_ms),
            "x-sim-timestamps": "1",
            "x-sim-seed": "7",
            **self.extra,
        }
        head = f"POST {self.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        return head.encode() + b"\r\n" + _BODY


@dataclass(slots=True)
class Results:
    """Everything the load run saw."""

    latencies_ns: list[int] = field(default_factory=list)
    ttft_ns: list[int] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    streams: int = 0
    errors: int = 0
    body_bytes: int = 0
    reads: int = 0  # body reads (``data_received`` calls after the head): chunks per read
    window: tuple[int, int] = (0, 1 << 62)  # monotonic ns; latencies and TTFTs count inside it

    @property
    def chunks(self) -> int:
        """Stamped output events received inside the window."""
        return len(self.latencies_ns)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses one chunked (or length-delimited) response at a time."""

    def __init__(self, results: Results, on_done: Callable[[bool], None]) -> None:
        self.results = results
        self.on_done = on_done
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.rate_bps = 0.0  # > 0: a slow reader, pausing reads to stay under this many bytes/s
        self.reset("", 0)

    def reset(self, bench_id: str, sent_ns: int) -> None:
        self.bench_id = bench_id
        self.sent_ns = sent_ns
        self.head = b""
        self.in_body = False
        self.chunked = False
        self.remaining = 0  # bytes left in the current chunk (or body when length-delimited)
        self.pending = b""  # undecoded chunked framing
        self.carry = b""
        self.sha = hashlib.sha256()
        self.first = True
        self.active = bool(bench_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.active:
            self.active = False
            self.on_done(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            return
        now = time.monotonic_ns()
        self.results.reads += self.in_body
        if self.rate_bps and self.transport is not None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(
                len(data) / self.rate_bps, self.transport.resume_reading
            )
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].decode("latin-1"), self.head[end + 4 :]
            if not head.startswith("HTTP/1.1 200"):
                self.finish(False)
                return
            lower = head.lower()
            self.in_body = True
            self.chunked = "transfer-encoding: chunked" in lower
            if not self.chunked:
                match = re.search(r"content-length:\s*(\d+)", lower)
                self.remaining = int(match.group(1)) if match else -1
        if self.chunked:
            self.dechunk(data, now)
        else:
            self.body(data, now)
            if self.remaining >= 0:
                self.remaining -= len(data)
                if self.remaining == 0:
                    self.finish(True)

    def dechunk(self, data: bytes, now: int) -> None:
        buf = self.pending + data if self.pending else data
        pos = 0
        size = len(buf)
        while pos < size:
            if self.remaining:
                take = min(self.remaining, size - pos)
                self.body(buf[pos : pos + take], now)
                pos += take
                self.remaining -= take
                continue
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                break
            if line_end == pos:  # CRLF after a chunk's data
                pos += 2
                continue
            length = int(buf[pos:line_end].split(b";", 1)[0], 16)
            if length == 0:
                if buf.find(b"\r\n", line_end + 2) < 0:
                    break  # wait for the final CRLF
                self.finish(True)
                return
            self.remaining = length
            pos = line_end + 2
        self.pending = buf[pos:]

    def body(self, piece: bytes, now: int) -> None:
        self.sha.update(piece)
        self.results.body_bytes += len(piece)
        window_start, window_end = self.results.window
        if not window_start <= now <= window_end:
            if self.first and b"sim_sent_ns" in piece:
                self.first = False  # this stream's first token fell outside the window
            self.carry = piece[-40:]
            return
        buf = self.carry + piece if self.carry else piece
        consumed = 0
        size = len(buf)
        for match in _STAMP.finditer(buf):
            if match.end() == size:
                break  # the digits may continue in the next read
            latency = now - int(match.group(1))
            if self.first:
                self.first = False
                self.results.ttft_ns.append(now - self.sent_ns)
            self.results.latencies_ns.append(latency)
            consumed = match.end()
        self.carry = buf[max(consumed, size - 40) :]

    def finish(self, ok: bool) -> None:
        self.results.digests[self.bench_id] = self.sha.hexdigest()
        self.active = False
        self.on_done(ok)


async def run_load(
    host: str,
    port: int,
    *,
    concurrency: int,
    duration_s: float,
    shape: Shape,
    tag: str,
    ramp_s: float,
    on_window: Callable[[bool], None] = lambda start: None,
    streams_per_slot: int | None = None,
) -> Results:
    """``concurrency`` slots streaming back to back for ``duration_s``; returns what they saw.

    Stream starts are spread over ``ramp_s``; chunks and TTFTs count only in the steady window
    that follows, until the deadline (``on_window(True)`` / ``on_window(False)`` mark its ends).
    With ``streams_per_slot`` each slot stops after that many streams and every chunk counts (a
    fixed workload: ``concurrency * streams_per_slot`` streams; no new stream after the deadline).
    """
    loop = asyncio.get_running_loop()
    results = Results()
    if streams_per_slot is None:
        now_ns = time.monotonic_ns()
        results.window = (now_ns + int(ramp_s * 1e9), now_ns + int(duration_s * 1e9))
        loop.call_later(ramp_s, on_window, True)
        loop.call_later(duration_s, on_window, False)
    deadline = loop.time() + duration_s
    host_header = f"{host}:{port}"
    rng = random.Random(1)
    counter = 0

    async def slot(index: int) -> None:
        nonlocal counter
        await asyncio.sleep(rng.random() * ramp_s)  # spread stream phases: no synchronized bursts
        conn: _Conn | None = None
        run = 0
        while loop.time() < deadline and run != streams_per_slot:
            run += 1
            done: asyncio.Future[bool] = loop.create_future()

            def on_done(ok: bool, done: asyncio.Future[bool] = done) -> None:
                if not done.done():
                    done.set_result(ok)

            if conn is None or conn.closed.done():
                try:
                    _, conn = await loop.create_connection(
                        lambda done=done: _Conn(results, on_done), host, port
                    )
                except OSError:
                    results.errors += 1
                    await asyncio.sleep(0.05)
                    continue
            conn.on_done = on_done
            counter += 1
            bench_id = f"{tag}-{index}-{counter}"
            conn.reset(bench_id, time.monotonic_ns())
            assert conn.transport is not None
            conn.transport.write(shape.request(bench_id, host_header))
            ok = await done
            results.streams += 1
            if not ok:
                results.errors += 1
                results.digests.pop(bench_id, None)
                if conn.transport is not None:
                    conn.transport.close()
                conn = None
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(slot(i) for i in range(concurrency)))
    return results


async def open_idle(host: str, port: int, count: int, shape: Shape) -> list[_Conn]:
    """Open ``count`` streams that get their headers and then stay silent (a long TTFT)."""
    loop = asyncio.get_running_loop()
    conns: list[_Conn] = []
    results = Results()
    host_header = f"{host}:{port}"

    async def one(i: int) -> None:
        _, conn = await loop.create_connection(lambda: _Conn(results, lambda ok: None), host, port)
        conn.reset(f"idle-{i}", time.monotonic_ns())
        assert conn.transport is not None
        conn.transport.write(shape.request(f"idle-{i}", host_header))
        conns.append(conn)

    for start in range(0, count, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
    return conns
