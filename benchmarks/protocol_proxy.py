"""Reference: a pass-through on asyncio ``Protocol``s + httptools (llhttp) + uvloop, nothing else.

The floor a Python proxy can reach: no framework, no analysis, no metrics, no logs. One keep-alive
upstream connection per in-flight request (pooled), request bodies buffered (they are small here),
response bodies forwarded as they arrive (length-delimited as-is, otherwise re-chunked), upstream
reading paused while the client's socket is full. Like ``bare_proxy.py`` it does not import
streamwatch. Run: ``python benchmarks/protocol_proxy.py --upstream http://127.0.0.1:8000``
(prints ``port N``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

_HOP = frozenset(
    (b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade")
)
_REQUEST_DROP = _HOP | {b"host", b"content-length"}  # both rewritten for the upstream


class Upstream(asyncio.Protocol):
    """One pooled upstream connection; relays one response at a time to ``client``."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.headers: list[bytes] = []
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        self.fail()

    def fail(self) -> None:
        if self.client is not None:
            self.client.abort()
        self.client = None
        if self.transport is not None:
            self.transport.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key not in _HOP:
            self.headers.append(b"%s: %s\r\n" % (name, value))
            if key == b"content-length":
                self.chunked = False

    def on_message_begin(self) -> None:
        self.headers = []
        self.chunked = True

    def on_headers_complete(self) -> None:
        if self.client is None:
            return
        status = self.parser.get_status_code()
        if self.chunked:
            self.headers.append(b"transfer-encoding: chunked\r\n")
        self.client.write(b"HTTP/1.1 %d \r\n%s\r\n" % (status, b"".join(self.headers)))

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.client.write(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            if self.chunked:
                client.write(b"0\r\n\r\n")
            client.finished()
        if self.parser.should_keep_alive() and self.transport is not None:
            self.pool.append(self)
        elif self.transport is not None:
            self.transport.close()


class Client(asyncio.Protocol):
    """One downstream connection: parses a request, sends it upstream, writes the response."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's does not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None and upstream.client is self:
            upstream.client = None
            upstream.fail()  # its response is half read: the connection cannot be reused

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key not in _REQUEST_DROP:
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        method = self.parser.get_method()
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n" % (
            method, self.url, self.proxy.host, len(body), b"".join(self.headers)
        )  # fmt: skip
        asyncio.get_running_loop().create_task(self.forward(head + body))

    async def forward(self, request: bytes) -> None:
        if self.transport is not None:
            self.transport.pause_reading()  # one request at a time per connection
        try:
            upstream = await self.proxy.connect()
        except OSError:
            self.abort()
            return
        upstream.client, self.upstream = self, upstream
        assert upstream.transport is not None
        upstream.transport.write(request)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def finished(self) -> None:
        self.upstream = None
        if self.transport is not None:
            if self.parser.should_keep_alive():
                self.transport.resume_reading()
            else:
                self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Proxy:
    """The upstream address and its keep-alive pool."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.host = parts.netloc.encode()
        self.pool: list[Upstream] = []

    async def connect(self) -> Upstream:
        if self.pool:
            return self.pool.pop()
        loop = asyncio.get_running_loop()
        _transport, upstream = await loop.create_connection(
            lambda: Upstream(self.pool), *self.address
        )
        return upstream


async def _serve(upstream: str, port: int) -> None:
    proxy = Proxy(upstream)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(proxy), "127.0.0.1", port, backlog=4096)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(_serve(args.upstream.rstrip("/"), args.port))


if __name__ == "__main__":
    main()
