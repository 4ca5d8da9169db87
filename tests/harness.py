"""End-to-end harness: the simulator, streamwatch in-process or as a subprocess, raw upstreams, and
a /metrics reader. Every listener binds 127.0.0.1 on an ephemeral port.

Importable by any test package (``from tests.harness import ...``); it holds no fixtures itself, so
each package decides its own scoping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import h11
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from streamwatch.config import Route, Settings
from streamwatch.serve import Running, start, stop
from streamwatch.simulator.profile import Profile
from streamwatch.simulator.server import start_simulator

LOOPBACK = "127.0.0.1"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"

# Fast and healthy unless a request's x-sim-* headers say otherwise.
FAST = Profile(
    weights={"normal": 1.0}, seed=7, output_tokens=6, ttft_s=0.0, gap_mean_s=0.0, gap_jitter_s=0.0
)


async def until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``condition`` (sync or async) until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


# -- upstreams ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def simulator(profile: Profile = FAST) -> AsyncIterator[str]:
    """The simulated LLM upstream; yields its base URL."""
    runner, port = await start_simulator(LOOPBACK, 0, profile)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Recorder:
    """A byte-recording TCP relay in front of an upstream: what the upstream really wrote."""

    target: tuple[str, int]
    port: int = 0
    connections: list[bytearray] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def bodies(self) -> list[bytes]:
        """Every response body the upstream sent, de-framed by h11, in connection order."""
        return [body for wire in self.connections for body in response_bodies(bytes(wire))]


@contextlib.asynccontextmanager
async def _connections(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]], name: str
) -> AsyncIterator[int]:
    """Serve ``handle`` per connection on an ephemeral loopback port; cancel them all at the end."""
    tasks: set[asyncio.Task[None]] = set()

    def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(handle(r, w), name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_connect, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tuple(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def recorder(upstream: str) -> AsyncIterator[Recorder]:
    """Relay to ``upstream`` byte for byte (resets included), recording the upstream's writes."""
    url = URL(upstream)
    rec = Recorder((url.host or LOOPBACK, url.port or 80))

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray | None
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if log is not None:
                    log += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            writer.transport.abort()  # pass a reset on as a reset
            return
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        wire = bytearray()
        rec.connections.append(wire)
        up_r, up_w = await asyncio.open_connection(*rec.target)
        try:
            await asyncio.gather(pump(client_r, up_w, None), pump(up_r, client_w, wire))
        finally:
            for w in (up_w, client_w):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    async with _connections(relay, "recorder-relay") as port:
        rec.port = port
        yield rec


def response_bodies(wire: bytes) -> list[bytes]:
    """De-frame a server's side of one HTTP/1.1 connection into its response bodies (the last one
    possibly incomplete, as an aborted stream leaves it)."""
    conn = h11.Connection(h11.CLIENT)
    bodies: list[bytes] = []
    conn.receive_data(wire)
    conn.receive_data(b"")
    while True:
        if conn.our_state is h11.IDLE:
            conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return bodies  # EOF: a body cut short is kept as far as it came
        if isinstance(event, h11.Response):
            bodies.append(b"")
        elif isinstance(event, h11.Data):
            bodies[-1] += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return bodies


def chat_chunk(delta: Mapping[str, Any], finish: str | None = None) -> bytes:
    """One OpenAI chat completion chunk as an SSE event."""
    choice = {"index": 0, "delta": dict(delta), "finish_reason": finish}
    payload = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def chat_stream(words: Sequence[str], gap: float = 0.0) -> list[tuple[float, bytes]]:
    """A complete chat stream as (delay, event) steps: role, one delta per word, finish, [DONE]."""
    steps = [(0.0, chat_chunk({"role": "assistant", "content": ""}))]
    steps += [(gap, chat_chunk({"content": word})) for word in words]
    steps += [(0.0, chat_chunk({}, "stop")), (0.0, b"data: [DONE]\n\n")]
    return steps


Steps = Sequence[tuple[float, bytes]]


@dataclass
class Scripted:
    """A bare asyncio HTTP/1.1 upstream (no aiohttp): answers every request with the same scripted
    chunked SSE response, and records each request and when each connection was closed on it."""

    steps: Steps  # (delay before, event bytes), each its own chunk
    finish: bool = True  # end the chunked body after the script; False: hang until closed
    head_delay: float = 0.0  # silence before the response head
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)  # monotonic, one per closed connection
    variants: Mapping[str, tuple[Steps, bool]] = field(default_factory=dict)
    """Other scripts ``(steps, finish)``, chosen by the request's ``x-request-id``, so one upstream
    (and one streamwatch in front of it) can serve many scripted cases."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _watch_close(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1 << 12):
                pass
        self.closed_at.append(time.monotonic())

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
            await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_at.append(time.monotonic())
            writer.close()
            return
        self.requests.append((head[0], headers))
        steps, finish = self.variants.get(
            headers.get("x-request-id", ""), (self.steps, self.finish)
        )
        closed = asyncio.get_running_loop().create_task(self._watch_close(reader))
        try:
            await asyncio.sleep(self.head_delay)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            for delay, data in steps:
                await asyncio.sleep(delay)
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            if finish:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            await closed
        except ConnectionError:
            await closed
        finally:
            closed.cancel()
            writer.close()


@contextlib.asynccontextmanager
async def scripted(
    steps: Steps,
    *,
    finish: bool = True,
    head_delay: float = 0.0,
    variants: Mapping[str, tuple[Steps, bool]] | None = None,
) -> AsyncIterator[Scripted]:
    """Serve a :class:`Scripted` upstream on an ephemeral port for the block."""
    upstream = Scripted(steps, finish, head_delay, variants=variants or {})
    async with _connections(upstream.handle, "scripted") as port:
        upstream.port = port
        yield upstream


# -- streamwatch ---------------------------------------------------------------------------------


def settings_for(upstream: str, **overrides: Any) -> Settings:
    """Settings with one ``default`` route and both listeners on ephemeral loopback ports."""
    values: dict[str, Any] = {
        "routes": (Route("default", URL(upstream)),),
        "listen": (LOOPBACK, 0),
        "admin_listen": (LOOPBACK, 0),
        **overrides,
    }
    return Settings(**values)


@contextlib.asynccontextmanager
async def streamwatch(upstream: str, **overrides: Any) -> AsyncIterator[Running]:
    """streamwatch in this event loop (``start``/``stop``); yields the ``Running`` handle."""
    running = await start(settings_for(upstream, **overrides))
    try:
        yield running
    finally:
        await stop(running, drain_timeout=0.5)


class ServeProcess:
    """``python -m streamwatch serve`` as a subprocess; ports from its ``streamwatch.started`` line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []  # every JSON log line so far
        self.raw: list[str] = []
        self.proxy_port = 0
        self.admin_port = 0
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="serve-stderr")

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            text = raw.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                line = json.loads(text)
                if isinstance(line, dict):
                    self.lines.append(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def ready(self, within: float = 15.0) -> None:
        """Wait for the start-up line, then for ``/readyz`` to answer 200."""
        await until(
            lambda: bool(self.events("streamwatch.started")) or self.proc.returncode is not None,
            within,
            what="streamwatch.started",
        )
        if not self.events("streamwatch.started"):
            raise AssertionError("serve exited before start-up:\n" + "\n".join(self.raw))
        started = self.events("streamwatch.started")[0]
        self.proxy_port = int(started["listen"].rpartition(":")[2])
        self.admin_port = int(started["admin"].rpartition(":")[2])

        async def readyz() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{self.admin_url}/readyz") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await until(readyz, within, interval=0.05, what="/readyz")

    @property
    def proxy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    async def wait(self, within: float = 15.0) -> int:
        """The exit status, once the process and its stderr are done."""
        code = await asyncio.wait_for(self.proc.wait(), within)
        await asyncio.wait_for(self._reader, within)
        return code

    async def terminate(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.wait()


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """Spawn ``python -m streamwatch ARGS`` with stderr piped (JSON logs) and a clean environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWATCH_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamwatch", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )  # fmt: skip


@contextlib.asynccontextmanager
async def serve_process(
    *args: str, env: Mapping[str, str] | None = None, ephemeral: bool = True
) -> AsyncIterator[ServeProcess]:
    """A ready ``streamwatch serve`` subprocess (JSON logs); SIGTERM and reaped on exit."""
    ports = ("--listen", f"{LOOPBACK}:0", "--admin-listen", f"{LOOPBACK}:0") if ephemeral else ()
    proc = await run_cli("serve", "--log-format", "json", *ports, *args, env=env)
    serving = ServeProcess(proc)
    try:
        await serving.ready()
        yield serving
    finally:
        await serving.terminate()


# -- /metrics ------------------------------------------------------------------------------------


class Scrape:
    """One /metrics scrape, queried by sample name and a subset of labels (matching samples sum)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def values(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """Non-zero totals of ``name`` by the value of ``label``."""
        out: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()) and s.value:
                key = s.labels.get(label, "")
                out[key] = out.get(key, 0.0) + s.value
        return out


async def scrape(admin_port: int) -> Scrape:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{LOOPBACK}:{admin_port}/metrics") as response,
    ):
        assert response.status == 200
        return Scrape(await response.text())


# -- raw clients ---------------------------------------------------------------------------------


def request_bytes(
    path: str,
    payload: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> bytes:
    """One HTTP/1.1 request with a JSON body, ``Connection: close``."""
    body = json.dumps(payload).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n"
    ).encode() + body


@dataclass
class RawReads:
    """What a raw socket client received: each read with its monotonic arrival time."""

    reads: list[tuple[float, bytes]] = field(default_factory=list)
    reset: bool = False

    @property
    def wire(self) -> bytes:
        return b"".join(data for _, data in self.reads)


async def raw_exchange(
    port: int,
    request: bytes,
    *,
    stop_when: Callable[[bytes], bool] | None = None,
) -> tuple[RawReads, float]:
    """Send ``request`` on a bare socket and record every read until EOF, reset or ``stop_when``
    (then the client closes); returns the reads and when the client closed (monotonic)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    got = RawReads()
    try:
        writer.write(request)
        while True:
            try:
                data = await reader.read(1 << 16)
            except ConnectionResetError:
                got.reset = True
                break
            if not data:
                break
            got.reads.append((time.monotonic(), data))
            if stop_when is not None and stop_when(got.wire):
                break
    finally:
        writer.close()
        closed = time.monotonic()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return got, closed


def h11_response(wire: bytes) -> tuple[int, bytes, bool]:
    """Parse a client's received bytes with h11: status, body, and whether the body ended cleanly."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(wire)
    conn.receive_data(b"")
    status, body = 0, b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return status, body, False  # premature EOF inside the body
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return status, body, True
        elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            return status, body, False


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[6:].decode() for line in body.split(b"\n") if line.startswith(b"data: ")]
