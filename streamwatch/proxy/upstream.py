"""The upstream side: connecting (DNS, TCP and TLS under one ``connect_timeout``) and one
``asyncio.Protocol`` per connection that parses responses with llhttp (``httptools``, strict).

llhttp only says where things are: the status, each header (as bytes, never decoded, so a
non-UTF-8 value reaches the client byte for byte), where the body ends. Strict mode rejects what
RFC 9112 says a recipient must reject -- ``Content-Length`` next to ``Transfer-Encoding``, a space
before the colon (``Content-Length : 2``), control bytes in a header -- and the relay answers 502.
The protocol collects the decoded body pieces of one read and hands them to its
:class:`UpstreamListener` (the exchange) once per read, then says whether the response ended.

Bounds: a header block larger than :data:`MAX_HEAD_BYTES`, a field over :data:`MAX_FIELD_BYTES`
or more than :data:`MAX_FIELDS` fields is a protocol error (aiohttp's limits, kept).
"""

from __future__ import annotations

import asyncio
import select
import ssl
from typing import TYPE_CHECKING, Protocol, cast

import httptools

if TYPE_CHECKING:
    from streamwatch.proxy.headers import Headers
    from streamwatch.proxy.pool import Origin, Pool

MAX_FIELD_BYTES = 8190
MAX_FIELDS = 128
MAX_HEAD_BYTES = 64 << 10


class UpstreamListener(Protocol):
    """What an upstream connection reports to the exchange using it."""

    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> None: ...
    def upstream_body(self, data: bytes, complete: bool) -> None: ...
    def upstream_failed(self, reason: str) -> None: ...
    def upstream_lost(self, exc: BaseException | None) -> None: ...
    def upstream_flow(self, paused: bool) -> None: ...


class UpstreamError(Exception):
    """Connecting failed; ``kind`` is the metric label (connect, tls, timeout)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


async def connect(origin: Origin, tls: ssl.SSLContext | None, limit: float) -> UpstreamConnection:
    """A new connection to ``origin``; name resolution, TCP and TLS all within ``limit`` seconds."""
    scheme, host, port = origin
    loop = asyncio.get_running_loop()
    https = scheme == "https"
    try:
        async with asyncio.timeout(limit):
            _, conn = await loop.create_connection(
                UpstreamConnection,
                host,
                port,
                ssl=tls if https else None,
                server_hostname=host if https else None,
            )
    except TimeoutError as exc:
        raise UpstreamError("timeout") from exc
    except ssl.SSLError as exc:  # certificate verification included (SSLCertVerificationError)
        raise UpstreamError("tls") from exc
    except OSError as exc:  # the cause (gaierror, refused, unreachable) names the reason
        raise UpstreamError("connect") from exc
    return conn


class UpstreamConnection(asyncio.Protocol):
    """One upstream connection, serving one exchange at a time, pooled between them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.listener: UpstreamListener | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._pool: Pool | None = None
        self._origin: Origin | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reset_response(head_only=False)

    def _reset_response(self, *, head_only: bool) -> None:
        self._head_only = head_only  # response to HEAD: no body whatever the headers say
        self._reason = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._head_done = False
        self._interim = False
        self._pieces: list[bytes] = []
        self.responded = False  # a byte of this response arrived: the request is never resent
        self.complete = False  # llhttp saw the end of the response's framing
        self.extra = False  # a byte arrived after that end: never reuse
        self.keep_alive = False

    # -- use by an exchange ---------------------------------------------------------------------

    def attach(self, listener: UpstreamListener, *, head_only: bool) -> None:
        self.listener = listener
        self._reset_response(head_only=head_only)

    def detach(self) -> None:
        self.listener = None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def reusable(self) -> bool:
        """The response ended cleanly and nothing followed it (the pool's condition)."""
        return (
            self.complete
            and not self.extra
            and self.keep_alive
            and not self._head_only
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def abort(self) -> None:
        """Close now (RST if unread data): an abandoned generation stops at once."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self, paused: bool) -> None:
        if self.transport is None or self.closed:
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # -- the pool --------------------------------------------------------------------------------

    def enter_pool(self, pool: Pool, origin: Origin, idle_seconds: float) -> None:
        self._pool, self._origin = pool, origin
        # An idle connection must read, so a stray byte or the upstream's close is seen at once;
        # the exchange that used it last may have paused it (its client stopped reading just as
        # the response ended), and a paused one would starve the next request of its response.
        if self.transport is not None:
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(idle_seconds, self._idle_expired)

    def leave_pool(self) -> None:
        self._pool = self._origin = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def reusable_idle(self) -> bool:
        """Still open, and nothing waits unread in its socket: a FIN or a stray byte that arrived
        in this loop iteration, before the event loop ran this connection's read callback, so
        only a close already on the wire can race the request sent on it."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        sock = transport.get_extra_info("socket")
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._drop_from_pool()
        if self.transport is not None:
            self.transport.close()

    def _drop_from_pool(self) -> None:
        if self._pool is not None and self._origin is not None:
            self._pool.discard(self._origin, self)
        self.leave_pool()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        self.responded = True
        if listener is None or self.complete:
            # Bytes on an idle connection (or after the response ended): a late response, a body
            # after a 204, a 408 sent while idle. Never let the next client read them.
            self.extra = True
            self._drop_from_pool()
            self.abort()
            return
        if not self._head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES + len(data):
                listener.upstream_failed("head too large")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            listener.upstream_failed("unexpected upgrade")
            return
        except httptools.HttpParserError as exc:
            if self.complete:
                self.extra = True  # garbage after a complete response
            else:
                listener.upstream_failed(type(exc).__name__)
                return
        if self.listener is None:
            return  # the head callback failed the exchange
        if self._pieces or self.complete:
            pieces, self._pieces = self._pieces, []
            data_out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            listener.upstream_body(data_out, self.complete)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop_from_pool()
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_flow(True)

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_flow(False)

    # -- llhttp callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_status(self, status: bytes) -> None:
        if not self.complete:
            self._reason += status
            if len(self._reason) > MAX_FIELD_BYTES:
                raise ValueError("status line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        if len(name) + len(value) > MAX_FIELD_BYTES or len(self._headers) >= MAX_FIELDS:
            raise ValueError("header too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete or self.listener is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 103 Early Hints and the like: not forwarded (as nginx)
            self._reason, self._headers = b"", []
            return
        self._head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        self.listener.upstream_head(status, self._reason, self._headers)
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._pieces.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self.complete = True
            self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
