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
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
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
from tests.core.support import chat_chunk
from tests.reliability.harness.client import RawClient, Response, build_request
from tests.reliability.harness.proxy import ProxyProcess

LOOPBACK = "127.0.0.1"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"

# Fast and healthy unless a request's x-sim-* headers say otherwise.
FAST = Profile(
    weights={"normal": 1.0}, seed=7, output_tokens=6, ttft_s=0.0, gap_mean_s=0.0, gap_jitter_s=0.0
)
#: FAST as ``streamwatch simulate`` flags, for :func:`simulate_process`.
FAST_ARGS = (
    *("--mix", "normal=1", "--seed", "7", "--tokens", "6"),
    *("--ttft-ms", "0", "--gap-ms", "0", "--jitter-ms", "0"),
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


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound, never listening.

    Held, not bound and closed: a closed port can be handed to the next bind to port 0 (once the
    proxy's own listener got it, so the "dead" upstream was the proxy itself and answered 503).
    """
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def simulator(profile: Profile = FAST) -> AsyncIterator[str]:
    """The simulated LLM upstream; yields its base URL."""
    runner, port = await start_simulator(LOOPBACK, 0, profile)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def simulate_process(*args: str) -> AsyncIterator[str]:
    """``streamwatch simulate --port 0 ARGS`` as a subprocess; yields its base URL (its first line).

    Unlike :func:`simulator`, it answers while the test's event loop is not running (a module of
    synchronous tests querying a long-lived fixture, or a test blocked in a thread).
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamwatch", "simulate", "--host", LOOPBACK, "--port", "0", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        url = line.strip().rpartition(" ")[2]
        assert url.startswith(f"http://{LOOPBACK}:"), line
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


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


def chat_stream(words: Sequence[str], gap: float = 0.0) -> list[tuple[float, bytes]]:
    """A complete chat stream as (delay, event) steps: role, one delta per word, finish, [DONE]."""
    steps = [(0.0, chat_chunk({"role": "assistant", "content": ""}, model="m"))]
    steps += [(gap, chat_chunk({"content": word}, model="m")) for word in words]
    steps += [(0.0, chat_chunk({}, "stop", model="m")), (0.0, b"data: [DONE]\n\n")]
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
    head: bytes = b""  # more response header lines, each ending in CRLF

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
                + self.head
                + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
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
    head: bytes = b"",
) -> AsyncIterator[Scripted]:
    """Serve a :class:`Scripted` upstream on an ephemeral port for the block."""
    upstream = Scripted(steps, finish, head_delay, variants=variants or {}, head=head)
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


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """Spawn ``python -m streamwatch ARGS`` with stderr piped and no ``STREAMWATCH_*`` but ``env``'s,
    for the tests of a start-up that must fail (a served one is :func:`serve_process`)."""
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
) -> AsyncIterator[ProxyProcess]:
    """A ready ``streamwatch serve ARGS`` (JSON logs at info), started and stopped (SIGTERM) in a
    thread so that an upstream in this event loop keeps serving meanwhile."""
    process = ProxyProcess(None, *args, env=env, log_level="info", ephemeral=ephemeral)
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await process.terminate()


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
    """One HTTP/1.1 request with a JSON body and ``Connection: close``."""
    return build_request(
        method,
        path,
        [("Content-Type", "application/json"), ("Connection", "close"), *(headers or {}).items()],
        json.dumps(payload).encode(),
        host=LOOPBACK,
    )


async def raw_exchange(
    port: int,
    request: bytes,
    *,
    stop_when: Callable[[bytes], bool] | None = None,
) -> tuple[Response, float]:
    """Send ``request`` on a bare socket (the reliability harness's :class:`RawClient`, in a thread
    so this event loop keeps serving) and read until the response ends, EOF, a reset or
    ``stop_when(bytes so far)`` (then the client closes); returns the response and when the client
    closed (monotonic)."""

    def run() -> tuple[Response, float]:
        client = RawClient(port, timeout=60)
        try:
            client.expect(request.split(b" ", 1)[0].decode())
            client.send(request)
            until = None if stop_when is None else (lambda r: stop_when(bytes(r.raw)))
            return client.read(until=until, deadline=60), time.monotonic()
        finally:
            client.close()

    return await asyncio.to_thread(run)


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[6:].decode() for line in body.split(b"\n") if line.startswith(b"data: ")]
