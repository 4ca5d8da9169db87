"""H1: a scripted raw-socket upstream that can forge framing and faults (no aiohttp involved).

It runs in a thread with its own event loop so that tests (and the streamwatch subprocess) talk to it
over real loopback sockets. Requests are parsed with ``h11``; the response is a :class:`Scenario`
(a list of steps) chosen by the request's ``x-h1-scenario`` header, written byte for byte.
Everything is recorded per connection: the raw request bytes, parsed requests, each write's time
and size, how long writes waited for the peer (backpressure), and when the peer went away.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import h11

Framing = Literal["chunked", "cl", "close"]
SCENARIO_HEADER = "x-h1-scenario"
T = TypeVar("T")


@dataclass(frozen=True)
class Headers:
    """Status line and headers; ``framing`` adds Transfer-Encoding or Content-Length (or neither)."""

    status: int = 200
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/event-stream"),)
    framing: Framing = "chunked"


@dataclass(frozen=True)
class Send:
    """Body bytes in one write (chunk-encoded when the framing is chunked)."""

    data: bytes


@dataclass(frozen=True)
class Loop:
    """``data`` written ``times`` times (``None``: until the peer leaves), ``interval`` s apart."""

    data: bytes
    times: int | None = None
    interval: float = 0.0


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Raw:
    """Bytes written verbatim, for forged framing (no chunk encoding)."""

    data: bytes


@dataclass(frozen=True)
class End:
    """Clean end: the terminating chunk, or a close for close-delimited bodies."""


@dataclass(frozen=True)
class Rst:
    """Reset the connection (SO_LINGER 0)."""


@dataclass(frozen=True)
class HalfClose:
    """Send FIN (shutdown SHUT_WR) without the terminating chunk, keep reading."""


@dataclass(frozen=True)
class Hang:
    """Write nothing more until the peer goes away."""


@dataclass(frozen=True)
class Gate:
    """Write nothing more until the test sets ``opened`` (the connection is closed after ``within`` s).

    Lets a test step the upstream in lockstep with what its client has received: proof by causality,
    not by timing, that a write was forwarded before the next one existed.
    """

    opened: threading.Event
    within: float = 30.0


@dataclass(frozen=True)
class Stale:
    """On a reused connection (a request after its first), write ``prefix`` and close it, with a
    FIN or (``rst``) an RST, without answering: an upstream whose keep-alive timer fired as the
    request arrived. On a connection's first request it does nothing."""

    rst: bool = False
    prefix: bytes = b""


Step = Headers | Send | Loop | Sleep | Raw | End | Rst | HalfClose | Hang | Gate | Stale


@dataclass(frozen=True)
class Scenario:
    steps: Sequence[Step]

    @property
    def body(self) -> bytes:
        """The body bytes the scenario sends (finite scenarios only), i.e. U in L1."""
        parts: list[bytes] = []
        for step in self.steps:
            if isinstance(step, Send):
                parts.append(step.data)
            elif isinstance(step, Loop):
                assert step.times is not None
                parts.append(step.data * step.times)
        return b"".join(parts)


def sse_scenario(
    events: Sequence[bytes],
    *,
    framing: Framing = "chunked",
    interval: float = 0.0,
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/event-stream"),),
    status: int = 200,
    end: Step | None = None,
) -> Scenario:
    """One write per event, ``interval`` s apart, then ``end`` (a clean end by default)."""
    steps: list[Step] = [Headers(status, headers, framing)]
    for i, event in enumerate(events):
        if i and interval:
            steps.append(Sleep(interval))
        steps.append(Send(event))
    steps.append(end or End())
    return Scenario(steps)


@dataclass
class Request:
    """One request as upstream received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    http_version: str = "1.1"
    writes: list[tuple[int, int]] = field(
        default_factory=list
    )  # response writes: (ns after, bytes)

    def header(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k == lowered]


@dataclass
class Connection:
    """Everything one upstream connection saw and did."""

    opened_ns: int
    raw: bytearray = field(default_factory=bytearray)
    requests: list[Request] = field(default_factory=list)
    written: int = 0
    drain_wait_ns: int = 0
    closed_ns: int | None = None  # when the peer's FIN/RST arrived (or our write failed)
    parse_error: str | None = None


class FakeUpstream:
    """The H1 server; ``start()`` returns once it listens on an ephemeral loopback port."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # serve https with this server context
        self.scenarios: dict[str, Scenario] = {}
        self.default: Scenario = sse_scenario([b"data: {}\n\n", b"data: [DONE]\n\n"])
        self.connections: list[Connection] = []
        self.port = 0
        self._counter = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="h1")
        self._server: asyncio.Server | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        self._server = self.call(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- scenarios and records -------------------------------------------------------------------

    def add(self, scenario: Scenario) -> str:
        """Register ``scenario``; send its key in the ``x-h1-scenario`` request header."""
        key = f"s{next(self._counter)}"
        self.scenarios[key] = scenario
        return key

    def connections_for(self, key: str) -> list[Connection]:
        return [
            c
            for c in tuple(self.connections)
            if any(r.header(SCENARIO_HEADER) == [key] for r in c.requests)
        ]

    def requests_for(self, key: str) -> list[Request]:
        return [
            r
            for c in self.connections_for(key)
            for r in c.requests
            if r.header(SCENARIO_HEADER) == [key]
        ]

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return predicate()

    # -- the server --------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(time.monotonic_ns())
        self.connections.append(conn)
        requests: asyncio.Queue[Request | None] = asyncio.Queue()
        closed = asyncio.Event()
        read_task = asyncio.create_task(self._read(reader, conn, requests, closed))
        try:
            while True:
                request = await requests.get()
                if request is None:
                    return
                key = (request.header(SCENARIO_HEADER) or [""])[0]
                scenario = self.scenarios.get(key, self.default)
                keep = await self._respond(scenario, writer, conn, closed, request)
                if not keep:
                    return
        except (ConnectionError, OSError):
            if conn.closed_ns is None:
                conn.closed_ns = time.monotonic_ns()
        except asyncio.CancelledError:
            return  # stop(): asyncio's stream callback must not see a cancelled handler task
        finally:
            read_task.cancel()
            if not writer.is_closing():
                writer.close()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        conn: Connection,
        requests: asyncio.Queue[Request | None],
        closed: asyncio.Event,
    ) -> None:
        parser = h11.Connection(h11.SERVER)
        current: Request | None = None
        try:
            while True:
                data = await reader.read(65536)
                conn.raw += data
                parser.receive_data(data)
                while True:
                    try:
                        event = parser.next_event()
                    except h11.RemoteProtocolError as exc:
                        conn.parse_error = str(exc)
                        event = h11.NEED_DATA
                        data = b""
                    if event is h11.PAUSED and parser.their_state is h11.DONE:
                        # We answer outside h11 (forged framing); restart it for the next request.
                        trailing, _ = parser.trailing_data
                        parser = h11.Connection(h11.SERVER)
                        parser.receive_data(trailing)
                        continue
                    if event is h11.NEED_DATA or event is h11.PAUSED:
                        break
                    if isinstance(event, h11.Request):
                        current = Request(
                            event.method.decode(),
                            event.target.decode(),
                            [
                                (k.decode().lower(), v.decode("latin-1"))
                                for k, v in event.headers.raw_items()
                            ],
                            http_version=event.http_version.decode(),
                        )
                        conn.requests.append(current)
                    elif isinstance(event, h11.Data) and current is not None:
                        current.body += event.data
                    elif isinstance(event, h11.EndOfMessage) and current is not None:
                        requests.put_nowait(current)
                        current = None
                    elif isinstance(event, h11.ConnectionClosed):
                        break
                if not data:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            if conn.closed_ns is None:
                conn.closed_ns = time.monotonic_ns()
            closed.set()
            requests.put_nowait(None)

    async def _write(
        self, writer: asyncio.StreamWriter, conn: Connection, data: bytes, request: Request
    ) -> None:
        writer.write(data)
        before = time.monotonic_ns()
        await writer.drain()
        now = time.monotonic_ns()
        conn.drain_wait_ns += now - before
        conn.written += len(data)
        request.writes.append((now, len(data)))

    async def _respond(
        self,
        scenario: Scenario,
        writer: asyncio.StreamWriter,
        conn: Connection,
        closed: asyncio.Event,
        request: Request,
    ) -> bool:
        """Run the script; returns whether the connection may serve another request."""
        framing: Framing = "chunked"

        def frame(data: bytes) -> bytes:
            if framing == "chunked":
                return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
            return data

        for step in scenario.steps:
            if closed.is_set() and not isinstance(step, (Sleep, Hang)):
                return False
            match step:
                case Headers(status=status, headers=headers, framing=framing):
                    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
                    lines += [f"{k}: {v}" for k, v in headers]
                    if framing == "chunked":
                        lines.append("Transfer-Encoding: chunked")
                    elif framing == "cl":
                        lines.append(f"Content-Length: {len(scenario.body)}")
                    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                    await self._write(writer, conn, head, request)
                case Send(data=data):
                    await self._write(writer, conn, frame(data), request)
                case Loop(data=data, times=times, interval=interval):
                    framed = frame(data)
                    for _ in range(times) if times is not None else itertools.count():
                        if closed.is_set():
                            return False
                        await self._write(writer, conn, framed, request)
                        if interval:
                            await asyncio.sleep(interval)
                case Sleep(seconds=seconds):
                    await asyncio.sleep(seconds)
                case Gate(opened=opened, within=within):
                    loop = asyncio.get_running_loop()
                    if not await loop.run_in_executor(None, opened.wait, within):
                        writer.transport.abort()
                        return False
                case Raw(data=data):
                    await self._write(writer, conn, data, request)
                case End():
                    if framing == "chunked":
                        await self._write(writer, conn, b"0\r\n\r\n", request)
                        return True
                    if framing == "close":
                        writer.close()
                        return False
                    return True
                case Rst():
                    _reset(writer)
                    return False
                case Stale(rst=rst, prefix=prefix):
                    if request is conn.requests[0]:
                        continue
                    if prefix:
                        await self._write(writer, conn, prefix, request)
                    if rst:
                        _reset(writer)
                    else:
                        writer.close()
                    return False
                case HalfClose():
                    writer.write_eof()
                    await closed.wait()
                    return False
                case Hang():
                    await closed.wait()
                    return False
        return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    302: "Found",
    307: "Temporary Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
