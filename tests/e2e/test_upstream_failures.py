"""An unreachable upstream is diagnosable from the logs alone: the start-up line names every route's
upstream URL, and each ``upstream.failed`` line names the route, the upstream address, the kind (the
metric label) and the specific reason: refused, DNS, TLS, or a timeout waiting for the response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.harness import (
    CHAT,
    LOOPBACK,
    raw_exchange,
    refusing_port,
    request_bytes,
    serve_process,
)

pytestmark = pytest.mark.e2e

BODY = {"model": "m", "stream": True}


@contextlib.asynccontextmanager
async def silent_upstream(*, speak_http: bool = False) -> AsyncIterator[int]:
    """A TCP server that reads the request and never answers (or answers HTTP to anything)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(65536)
            if speak_http:  # a plain HTTP server: a TLS ClientHello gets this back
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            else:
                await reader.read()  # until the proxy gives up and closes
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def failed_line(
    upstream: str, *args: str
) -> tuple[int, dict[str, object], dict[str, object]]:
    """One request through a fresh ``serve``: the status, the started line, upstream.failed."""
    async with serve_process("--upstream", upstream, *args) as serving:
        reads, _ = await raw_exchange(serving.proxy_port, request_bytes(CHAT, BODY))
        status = reads.status
        code = await serving.terminate()
    assert code == 0
    [started] = serving.events("streamwatch.started")
    [failed] = serving.events("upstream.failed")
    return status, started, failed


class TestUpstreamFailureReasons:
    """Each way of failing to reach the upstream has its own reason on the log line."""

    async def test_refused(self) -> None:
        """Nothing listening: kind connect, reason refused, the route and its address named."""
        with refusing_port() as port:
            status, started, failed = await failed_line(f"http://{LOOPBACK}:{port}")
        assert status == 502
        assert (failed["kind"], failed["reason"]) == ("connect", "refused")
        assert failed["route"] == "default"
        assert failed["upstream"] == f"{LOOPBACK}:{port}"
        assert started["upstreams"] == {"default": f"http://{LOOPBACK}:{port}"}

    async def test_dns(self) -> None:
        """A name that does not resolve (.invalid never does): reason dns."""
        status, _, failed = await failed_line(
            "http://no-such-gateway.invalid:4000", "--connect-timeout", "30"
        )
        assert status == 502
        assert (failed["kind"], failed["reason"]) == ("connect", "dns")
        assert failed["upstream"] == "no-such-gateway.invalid:4000"

    async def test_tls_to_a_plain_http_port(self) -> None:
        """https:// to a server that speaks plain HTTP: kind tls, reason tls."""
        async with silent_upstream(speak_http=True) as port:
            status, _, failed = await failed_line(f"https://{LOOPBACK}:{port}")
        assert status == 502
        assert (failed["kind"], failed["reason"]) == ("tls", "tls")

    async def test_no_response_headers_in_time(self) -> None:
        """Connected, but no response headers within the idle timeout: reason response_timeout."""
        async with silent_upstream() as port:
            status, _, failed = await failed_line(
                f"http://{LOOPBACK}:{port}", "--upstream-idle-timeout", "1"
            )
        assert status == 504
        assert (failed["kind"], failed["reason"]) == ("timeout", "response_timeout")

    async def test_credentials_never_in_the_started_line(self) -> None:
        """The start-up line's upstream URLs come from the configuration, without userinfo
        (credentials in --upstream are refused at start-up, so there are none to leak)."""
        with refusing_port() as port:
            async with serve_process("--upstream", f"http://{LOOPBACK}:{port}/base") as serving:
                [started] = serving.events("streamwatch.started")
        assert started["upstreams"] == {"default": f"http://{LOOPBACK}:{port}/base"}
        assert "@" not in str(started["upstreams"])
