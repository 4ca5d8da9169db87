"""What the relay's connections share: settings, sinks, the upstream pool, admission counts, the
open streams (for the watchdog and ``/debug/streams``) and the drain.

Admission: a request takes one of ``max_streams`` slots when its response phase starts -- when its
body is complete -- not while the body uploads, so a client trickling a body cannot hold a slot
(issue 10, finding 4). Uploads are bounded separately: by ``max_connections``, by the body's idle
timeout and by ``request_body_deadline``. The check against ``max_streams`` is made when the head
arrives (a fast 503, nothing sent upstream); the slot is taken when the body completes, so the
count can pass ``max_streams`` by the number of bodies that were uploading at that moment.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from streamwatch.config import Settings, upstream_tls
from streamwatch.core.analyzer import AnalyzerConfig
from streamwatch.core.record import CloseCause
from streamwatch.metricspec import REFUSED_MAX_CONNECTIONS
from streamwatch.proxy.pool import Origin, Pool
from streamwatch.proxy.recorder import Recorder
from streamwatch.proxy.responses import Refusal
from streamwatch.proxy.tap import Tap
from streamwatch.proxy.telemetry import Telemetry
from streamwatch.sinks import Sinks

if TYPE_CHECKING:
    import ssl

    from streamwatch.proxy.downstream import ClientConnection
    from streamwatch.proxy.relay import Exchange

log = structlog.get_logger("streamwatch.proxy")


@dataclass(slots=True)
class LiveStream:
    """An open analyzed stream, as the watchdog and ``/debug/streams`` see it."""

    request_id: str
    route: str
    tap: Tap


class ProxyState:
    """Shared by every connection of one proxy listener."""

    def __init__(self, settings: Settings, sinks: Sinks, recorder: Recorder | None = None) -> None:
        self.settings = settings
        self.sinks = sinks
        self.recorder = recorder  # --capture-dir
        self.analyzer_config = AnalyzerConfig(
            stall_threshold_ns=int(settings.stall_threshold * 1e9),
            first_token_stall_threshold_ns=int(settings.first_token_stall_threshold * 1e9),
            capture_content=settings.capture_content,
            capture_limit_chars=settings.capture_limit,
        )
        # One context per https origin (config.py allows one CA bundle per origin, as the pool
        # shares connections by origin), shared by routes with the same bundle.
        contexts: dict[str | None, ssl.SSLContext] = {}
        self.tls: dict[Origin, ssl.SSLContext] = {}
        for route in settings.routes:
            if route.upstream.scheme == "https":
                context = contexts.get(route.ca_bundle)
                if context is None:
                    context = contexts[route.ca_bundle] = upstream_tls(settings, route)
                self.tls[route.origin] = context
        self.pool = Pool()
        self.connections: set[ClientConnection] = set()
        self.exchanges: set[Exchange] = set()
        self.streams: dict[int, LiveStream] = {}
        self.inflight = 0  # requests holding a max_streams slot
        self.draining = False
        self.idle = asyncio.Event()  # set while no exchange is open (the drain waits on it)
        self.idle.set()

    # -- connections -----------------------------------------------------------------------------

    def open_connection(self, conn: ClientConnection) -> bool:
        """Admit a client connection, or refuse it past ``max_connections`` (logged, counted)."""
        if len(self.connections) >= self.settings.max_connections:
            log.warning("client.connection_refused", reason=REFUSED_MAX_CONNECTIONS,
                        limit=self.settings.max_connections)  # fmt: skip
            self.sinks.connection_refused(REFUSED_MAX_CONNECTIONS)
            return False
        self.connections.add(conn)
        return True

    def close_connection(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def count_refusal(self, refusal: Refusal) -> None:
        """A malformed request answered before it could be read whole: counted and logged like
        any request (no method, path or route: nothing of it is trusted)."""
        telemetry = Telemetry(
            self.sinks, method="", path="", route=None, side=self.settings.side, headers=[],
            t_request_ns=time.monotonic_ns(), server=("", None),
        )  # fmt: skip
        telemetry.finish(refusal.status, CloseCause.UPSTREAM_EOF, None)

    # -- exchanges -------------------------------------------------------------------------------

    def opened(self, exchange: Exchange) -> None:
        self.exchanges.add(exchange)
        self.idle.clear()

    def closed(self, exchange: Exchange) -> None:
        self.exchanges.discard(exchange)
        if not self.exchanges:
            self.idle.set()

    def expire(self, now_ns: int) -> None:
        """Watchdog tick: end exchanges whose upstream or client has been idle past its timeout."""
        write_limit = int(self.settings.downstream_write_timeout * 1e9)
        read_limit = int(self.settings.upstream_idle_timeout * 1e9)
        for exchange in tuple(self.exchanges):
            if exchange.write_since_ns:
                if _progressed(exchange):
                    exchange.write_since_ns = now_ns
                elif now_ns - exchange.write_since_ns > write_limit:
                    log.warning(
                        "client.write_timeout", after_s=self.settings.downstream_write_timeout
                    )
                    exchange.write_timeout()
            elif exchange.read_ns and now_ns - exchange.read_ns > read_limit:
                exchange.upstream_timeout()

    # -- drain -----------------------------------------------------------------------------------

    def start_drain(self) -> None:
        self.draining = True
        for conn in tuple(self.connections):
            conn.close_if_idle()

    def abort_all(self) -> int:
        """The drain deadline passed: abort what is still open (recorded as ``shutdown``)."""
        open_now = len(self.exchanges)
        for exchange in tuple(self.exchanges):
            exchange.shutdown()
        for conn in tuple(self.connections):
            conn.abort()
        return open_now

    def close(self) -> None:
        self.pool.close()


def _progressed(exchange: Exchange) -> bool:
    """Whether the kernel sent bytes to the client since the last look (``TIOCOUTQ`` shrank).

    A slow client that still reads is never cut: with megabytes of loopback or autotuned socket
    buffer a single write can legitimately stay blocked for seconds.
    """
    transport = exchange.client.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return False
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4)
        outq = int(struct.unpack("i", raw)[0])
    except OSError:
        return False
    moved, exchange.outq = outq != exchange.outq, outq
    return moved
