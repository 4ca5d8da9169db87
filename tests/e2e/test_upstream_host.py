"""The Host header sent upstream is the configured upstream's authority (RFC 9110 §7.2): its host,
an IPv6 literal in brackets, and its port unless it is the scheme's default."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.harness import CHAT, raw_exchange, request_bytes, streamwatch

pytestmark = pytest.mark.e2e

SSE_DONE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 14\r\n\r\n"
    b"data: [DONE]\n\n"
)


async def host_sent(host: str) -> tuple[bytes, int]:
    """(the Host value an upstream on ``host`` received for one request, its port)."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(SSE_DONE)
        await writer.drain()
        writer.close()

    try:
        server = await asyncio.start_server(handle, host.strip("[]"), 0)
    except OSError as exc:  # a container without IPv6 loopback
        pytest.skip(f"cannot listen on {host}: {exc}")
    port = int(server.sockets[0].getsockname()[1])
    try:
        async with streamwatch(f"http://{host}:{port}") as running:
            got, _ = await raw_exchange(
                running.proxy_port, request_bytes(CHAT, {"model": "m", "stream": True})
            )
        assert got.status == 200
    finally:
        server.close()
        await server.wait_closed()
    [head] = heads
    values = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")[1:]
        if line.split(b":", 1)[0].lower() == b"host"
    ]
    assert len(values) == 1, head
    return values[0], port


class TestHostSent:
    """What the upstream receives as Host, for each kind of --upstream host."""

    async def test_ipv4_literal(self) -> None:
        """An IPv4 address and a port that is not the default: ``127.0.0.1:PORT``."""
        value, port = await host_sent("127.0.0.1")
        assert value == b"127.0.0.1:%d" % port

    async def test_ipv6_literal_keeps_its_brackets(self) -> None:
        """An IPv6 address is sent as ``[::1]:PORT``, never the ambiguous ``::1:PORT``."""
        if not socket.has_ipv6:
            pytest.skip("this Python has no IPv6")
        value, port = await host_sent("[::1]")
        assert value == b"[::1]:%d" % port
