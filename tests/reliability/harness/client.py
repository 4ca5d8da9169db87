"""H2: a raw-socket client that sends exact bytes, reads at a chosen pace and checks framing with h11.

``h11`` is the independent framing oracle: it rejects CL+TE, bad chunking and a premature EOF, so a
response that ``h11`` accepts as complete really ended cleanly at the HTTP level.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h11


def build_request(
    method: str = "POST",
    target: str = "/v1/chat/completions",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "1.1",
    host: str = "upstream.test",
) -> bytes:
    """An HTTP/1.x request with ``Host`` and ``Content-Length`` (when there is a body) added."""
    lines = [f"{method} {target} HTTP/{version}", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chat_request(scenario: str, *extra: tuple[str, str], request_id: str | None = None) -> bytes:
    """A streaming chat-completions request that selects an H1 scenario."""
    headers = [("Content-Type", "application/json"), ("x-h1-scenario", scenario), *extra]
    if request_id:
        headers.append(("x-request-id", request_id))
    return build_request(body=b'{"model":"gpt-4o","stream":true,"messages":[]}', headers=headers)


@dataclass
class Response:
    """What came back, as h11 understood it."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # h11 saw EndOfMessage: a clean end at the HTTP level
    framing_error: str | None = None
    reset: bool = False  # the connection ended with ECONNRESET
    eof: bool = False  # the server closed the connection
    recvs: list[tuple[int, int]] = field(default_factory=list)  # (monotonic_ns, bytes) per recv
    raw: bytearray = field(default_factory=bytearray)
    t_headers_ns: int | None = None

    def header(self, name: str) -> list[str]:
        lowered = name.lower()
        return [v for k, v in self.headers if k == lowered]

    @property
    def parsed(self) -> tuple[int | None, bytes, bool]:
        """(status, body, whether it ended cleanly)."""
        return self.status, bytes(self.body), self.complete

    @property
    def aborted(self) -> bool:
        """The body did not end cleanly (premature EOF, reset or framing error)."""
        return not self.complete


class RawClient:
    """One TCP connection to ``port``; blocking sockets, every recv timestamped."""

    def __init__(self, port: int, *, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the handshake on
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(("127.0.0.1", port))
        except BaseException:
            self.sock.close()  # never leave a socket for the GC to report in a later test
            raise
        self._parser = h11.Connection(h11.CLIENT)
        self.response = Response()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def expect(self, method: str = "POST") -> None:
        """Tell the h11 oracle what request the next response answers."""
        headers = [("Host", "x")]
        if method == "POST":
            headers.append(("Content-Length", "0"))
        self._parser.send(h11.Request(method=method, target="/", headers=headers))
        self._parser.send(h11.EndOfMessage())

    def close(self, *, rst: bool = False) -> None:
        if rst:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def _feed(self, data: bytes) -> bool:
        """Feed the oracle; True once the response is over (complete or broken)."""
        r = self.response
        self._parser.receive_data(data)
        while True:
            try:
                event = self._parser.next_event()
            except h11.RemoteProtocolError as exc:
                r.framing_error = str(exc)
                return True
            if event is h11.NEED_DATA:
                return False
            if isinstance(event, h11.Response):
                r.status = event.status_code
                r.headers = [
                    (k.decode().lower(), v.decode("latin-1")) for k, v in event.headers.raw_items()
                ]
                r.t_headers_ns = time.monotonic_ns()
            elif isinstance(event, h11.Data):
                r.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                r.complete = True
                return True
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return True

    def read(
        self,
        *,
        until_body: int | None = None,
        until: Callable[[Response], bool] | None = None,
        rate: float | None = None,
        bufsize: int = 65536,
        deadline: float = 30.0,
        to_eof: bool = False,
    ) -> Response:
        """Read until the response ends (or ``until_body`` body bytes, or ``until``, or the deadline).

        ``rate`` (bytes/s) paces the reads: ``bufsize`` bytes at a time with sleeps between.
        ``to_eof`` keeps reading after the response until the server closes the connection.
        """
        r = self.response
        end = time.monotonic() + deadline
        started = time.monotonic()
        received = 0
        while time.monotonic() < end:
            if until_body is not None and len(r.body) >= until_body:
                return r
            if until is not None and until(r):
                return r
            if rate is not None:
                ahead = started + received / rate - time.monotonic()
                if ahead > 0:  # one clock read: a second one could make the sleep negative
                    time.sleep(ahead)
            try:
                self.sock.settimeout(max(0.01, end - time.monotonic()))
                data = self.sock.recv(bufsize)
            except ConnectionResetError:
                r.reset = True
                self._feed(b"")
                return r
            except TimeoutError:
                return r
            now = time.monotonic_ns()
            if not data:
                r.eof = True
                self._feed(b"")
                return r
            received += len(data)
            r.raw += data
            r.recvs.append((now, len(data)))
            if self._feed(data) and not to_eof:
                return r
            if r.framing_error:
                return r
        return r


def exchange(port: int, request: bytes, **read: object) -> Response:
    """Send ``request`` on a new connection and read the whole response."""
    client = RawClient(port)
    try:
        client.expect()
        client.send(request)
        return client.read(**read)  # type: ignore[arg-type]
    finally:
        client.close()
