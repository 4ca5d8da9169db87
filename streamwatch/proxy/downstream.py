"""The client side: one ``asyncio.Protocol`` per client connection, a small state machine over it.

States and the one timer each owns (:class:`~streamwatch.proxy.timers.StateTimer`, armed in
:meth:`ClientConnection._enter` and nowhere else):

* ``HEADERS`` -- waiting for (the rest of) a request's header block: ``request_header_timeout``
  from connect, or from the first byte of a later request. Expiry closes the connection.
* ``BODY`` -- the request is being forwarded while its body arrives: ``request_body_timeout`` of
  silence and ``request_body_deadline`` in total, either answered 408 (or an abort of both sides
  once the response has begun).
* ``RESPONSE`` -- the body is complete, the response is being relayed: no timer here (upstream
  silence and a client that stopped reading are the watchdog's).
* ``IDLE`` -- kept alive between requests: ``client_idle_timeout`` (nginx ``keepalive_timeout``).

Requests are parsed by llhttp (``httptools``) in strict mode, which rejects the smuggling shapes
(CL with TE, duplicate CL, bad chunk sizes, bare LF, obs-fold, ...). The pieces of one read are
collected during ``feed_data`` and acted on after it returns, so a read that turns out malformed
sends nothing upstream. A pipelined request waits (reading paused) until the previous response
ended. Header bytes are kept as bytes: nothing is decoded or re-encoded on the way upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import httptools
import structlog

from streamwatch.proxy import responses
from streamwatch.proxy.headers import Headers
from streamwatch.proxy.timers import StateTimer
from streamwatch.proxy.upstream import MAX_FIELD_BYTES, MAX_FIELDS, MAX_HEAD_BYTES

if TYPE_CHECKING:
    from streamwatch.proxy.relay import Exchange
    from streamwatch.proxy.state import ProxyState

log = structlog.get_logger("streamwatch.proxy")


LINGER_S = 2.0  # how long a closing connection keeps reading for the client's own close


class Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    RESPONSE = "response"
    IDLE = "idle"
    LINGER = "linger"  # answered and half-closed: reading and discarding until the client closes
    CLOSED = "closed"


@dataclass(slots=True)
class Request:
    """A parsed request head and the body bytes not yet handed to its exchange."""

    method: str
    target: bytes
    version: str
    headers: Headers
    keep_alive: bool
    t_ns: int
    body: list[bytes] = field(default_factory=list)
    complete: bool = False


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs one exchange at a time, owns its timer."""

    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.HEADERS
        self.exchange: Exchange | None = None
        self._loop = asyncio.get_running_loop()
        self._timer = StateTimer(self._loop, self._expired)
        self._parser = httptools.HttpRequestParser(self)
        self._reading: Request | None = None  # the request llhttp is parsing
        self._queue: deque[Request] = deque()  # parsed, waiting for their turn
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._failed: responses.Refusal | None = None
        self._body_started = 0.0
        self._body_seen = 0.0
        self._paused_by: set[str] = set()

    # -- state and timers, in one place -------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        settings = self.state.settings
        if phase is Phase.HEADERS:
            self._timer.arm(settings.request_header_timeout)
        elif phase is Phase.BODY:
            self._body_started = self._body_seen = self._loop.time()
            self._timer.arm(min(settings.request_body_timeout, settings.request_body_deadline))
        elif phase is Phase.IDLE:
            self._timer.arm(settings.client_idle_timeout)
        elif phase is Phase.LINGER:
            self._timer.arm(LINGER_S)
        else:
            self._timer.disarm()

    def _expired(self) -> None:
        phase = self.phase
        if phase is Phase.BODY:
            settings = self.state.settings
            now = self._loop.time()
            idle_left = self._body_seen + settings.request_body_timeout - now
            total_left = self._body_started + settings.request_body_deadline - now
            if idle_left > 0 and total_left > 0:
                self._timer.arm(min(idle_left, total_left))  # bytes came meanwhile
                return
            reason = "deadline" if total_left <= 0 else "idle"
            log.warning("client.body_timeout", reason=reason)
            if self.exchange is not None:
                self.exchange.client_body_error(responses.BODY_TIMEOUT)
            return
        if phase is Phase.LINGER:
            self.abort()
            return
        if phase is Phase.HEADERS:
            log.info("client.header_timeout")
        self.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = self.transport = cast("asyncio.Transport", transport)  # uvloop's: no subclass
        stream.set_write_buffer_limits(high=64 << 10)
        if not self.state.open_connection(self):
            stream.write(responses.TOO_MANY_CONNECTIONS.encode())
            self.close()
            return
        self._enter(Phase.HEADERS)

    def data_received(self, data: bytes) -> None:
        if self.phase in (Phase.CLOSED, Phase.LINGER) or self._failed is not None:
            return
        if self.phase is Phase.IDLE:
            self._enter(Phase.HEADERS)  # the first byte of the next request
        if self._reading is not None and not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes - len(data) > MAX_HEAD_BYTES:
                self._fail(responses.HEADERS_TOO_LARGE)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # CONNECT, or Connection: upgrade (WebSocket)
            connect = self._parser.get_method() == b"CONNECT"
            self._fail(responses.BAD_TARGET if connect else responses.UPGRADE_REFUSED)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            too_large = isinstance(cause, _TooLargeError)
            self._fail(responses.HEADERS_TOO_LARGE if too_large else responses.BAD_REQUEST)
        self._dispatch()

    def eof_received(self) -> bool:
        return False  # a client FIN ends the connection (and its stream), as nginx treats it

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self._timer.cancel()
        self.state.close_connection(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.client_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_flow(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client_flow(False)

    # -- llhttp callbacks ------------------------------------------------------------------------

    _headers_done = False

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._headers_done = False
        self._reading = Request("", b"", "", [], False, 0)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_FIELD_BYTES:
            raise _TooLargeError

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_FIELD_BYTES or len(self._headers) >= MAX_FIELDS:
            raise _TooLargeError
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = self._reading
        assert request is not None  # noqa: S101 (on_message_begin came first)
        request.method = parser.get_method().decode("ascii", "replace")
        request.target = self._url
        request.version = parser.get_http_version()
        request.headers = self._headers
        request.keep_alive = parser.should_keep_alive()
        request.t_ns = time.monotonic_ns()
        self._headers_done = True
        self._head_bytes = 0
        self._queue.append(request)

    def on_body(self, body: bytes) -> None:
        if self._reading is not None:
            self._reading.body.append(body)

    def on_message_complete(self) -> None:
        if self._reading is not None:
            self._reading.complete = True
            self._reading = None

    # -- running exchanges -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """After each read: start the next request if none is running, hand body bytes over."""
        if self.phase is Phase.CLOSED:
            return
        exchange = self.exchange
        if self._failed is not None and exchange is not None and not exchange.request.complete:
            exchange.client_body_error(self._failed)  # the body it was forwarding is malformed
            return
        if exchange is None and self._queue:
            request = self._queue[0]
            from streamwatch.proxy.relay import Exchange  # noqa: PLC0415 (import cycle)

            exchange = self.exchange = Exchange(self.state, self, request)
            self._enter(Phase.BODY)
            exchange.start()
            if self.exchange is not exchange:
                return  # refused: exchange_done() moved on already
        if exchange is not None:
            request = exchange.request
            if request.body:
                pieces, request.body = request.body, []
                self._body_seen = self._loop.time()
                exchange.client_body(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            if request.complete and self.phase is Phase.BODY and self.exchange is exchange:
                self._enter(Phase.RESPONSE)
                exchange.client_body_complete()
            if len(self._queue) > 1:
                self.pause("pipeline")  # the next request waits for this response
        elif self._failed is not None:
            self._send_failure()

    def _fail(self, refusal: responses.Refusal) -> None:
        """The bytes read cannot be parsed: answer once no response is in progress, then close."""
        self._failed = refusal
        self.pause("failed")
        running = 1 if self.exchange is not None else 0
        while len(self._queue) > running:
            self._queue.pop()  # requests of the failed read are never started
        self._reading = None

    def _send_failure(self) -> None:
        refusal = self._failed
        if refusal is None or self.transport is None:
            return
        log.warning("client.bad_request", status=refusal.status, error=refusal.code)
        self.state.count_refusal(refusal)
        self.transport.write(refusal.encode(close=True))
        self.close()

    def exchange_done(self, *, keep_alive: bool) -> None:
        """The exchange finished its response: next request, idle keep-alive, or close."""
        if self.exchange is not None:
            self.exchange = None
            if self._queue:
                self._queue.popleft()
        if self.phase is Phase.CLOSED:
            return
        if not keep_alive or self.state.draining:
            self.close()
            return
        self.resume("pipeline")
        if self._queue:
            self._dispatch()
        elif self._failed is not None:
            self._send_failure()
        elif self._reading is not None:
            self._enter(Phase.HEADERS)  # part of the next head already arrived
        else:
            self._enter(Phase.IDLE)

    # -- writing and closing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and self.phase not in (Phase.CLOSED, Phase.LINGER):
            self.transport.write(data)

    def pause(self, reason: str) -> None:
        """Stop reading from the client (several reasons may hold at once)."""
        if not self._paused_by and self.transport is not None and self.phase is not Phase.CLOSED:
            self.transport.pause_reading()
        self._paused_by.add(reason)

    def resume(self, reason: str) -> None:
        if reason not in self._paused_by:
            return
        self._paused_by.discard(reason)
        if not self._paused_by and self.transport is not None and self.phase is not Phase.CLOSED:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close gracefully, as nginx's lingering close: FIN after the bytes already written, then
        read and discard what the client still sends (an unread body) until it closes or
        :data:`LINGER_S` passes. Closing at once with unread input would send an RST, which can
        destroy the response before the client reads it."""
        transport = self.transport
        if transport is None or self.phase in (Phase.CLOSED, Phase.LINGER):
            return
        self._enter(Phase.LINGER)
        self._paused_by.clear()
        if transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()
        else:
            transport.close()

    def abort(self) -> None:
        """Close now, dropping anything unsent."""
        self._timer.cancel()
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Close with a TCP RST: a close-delimited body must never look complete."""
        self._timer.cancel()
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def close_if_idle(self) -> bool:
        """Drain: close a connection that has no request in progress."""
        if self.exchange is None and (self.phase is Phase.IDLE or self._reading is None):
            self.close()
            return True
        return False


class _TooLargeError(Exception):
    """A request line or header field past its limit."""
