"""One exchange: a client request tied to one upstream request, bytes relayed as they arrive.

Request: admitted (or refused with a small JSON answer, counted like any request) when its head
arrives; its body is forwarded piece by piece as it is read -- never held whole -- while the
core's :class:`~streamwatch.core.request.RequestFactsReader` learns ``model`` and ``stream``.
``Expect: 100-continue`` is answered by streamwatch as the body starts to be read (as nginx does)
and not forwarded. Flow control: a full upstream write buffer pauses reading from the client.

Response: the status line and end-to-end headers are relayed byte for byte; framing is the
relay's: a Content-Length body is relayed as is; a chunked or close-delimited upstream body goes
to an HTTP/1.1 client re-chunked, one chunk per upstream read (llhttp decodes; the decoded bytes go
to the tap), and to an HTTP/1.0 client close-delimited. The terminating chunk is written only
after llhttp saw the upstream's own end of body, so an upstream failure mid-body reaches the client
as an incomplete chunked body (FIN without the last chunk), a short Content-Length body, or, for a
close-delimited body, a TCP RST -- never as a clean end. Nothing is added: no ``Server``, no
``Date``. A full client write buffer pauses reading from the upstream.

Stale keep-alive connections: a request sent on a pooled connection that the upstream closes or
resets before any response byte (its keep-alive timer fired as the request arrived) is sent once
more on a new connection, when it may be (:meth:`Exchange._may_retry`): the request is replayable
(RFC 9112 section 9.3.1: an idempotent method, or an ``Idempotency-Key``; any request with
``--upstream-retry-non-idempotent``) and every byte sent so far is still held (at most
:data:`REPLAY_LIMIT`, dropped at the first response byte).

Per upstream read: take the arrival time, write to the client, then feed the tap. The end of an
exchange (:meth:`Exchange._end`) is recorded exactly once, whatever ended it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING

import structlog

from streamwatch.config import Route
from streamwatch.core.record import CloseCause
from streamwatch.core.request import RequestFactsReader, has_dot_segment
from streamwatch.proxy import responses
from streamwatch.proxy.failures import failure_reason
from streamwatch.proxy.headers import client_response_headers, tokens, upstream_request_headers
from streamwatch.proxy.pool import Origin
from streamwatch.proxy.responses import Refusal
from streamwatch.proxy.tap import Tap
from streamwatch.proxy.telemetry import Telemetry
from streamwatch.proxy.upstream import UpstreamConnection, UpstreamError, connect

if TYPE_CHECKING:
    from streamwatch.proxy.downstream import ClientConnection, Request
    from streamwatch.proxy.headers import Headers
    from streamwatch.proxy.state import ProxyState

log = structlog.get_logger("streamwatch.proxy")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the response began
_PENDING_LIMIT = 64 << 10  # body bytes held while the upstream connects; then the client waits
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUSES = (204, 304)
#: Request bytes held, on a reused upstream connection only, until its first response byte, so a
#: stale connection's request can be sent again. A request larger than this is not retried (as
#: HAProxy retries only what its buffer still holds); the cap keeps finding 3's bounded memory.
REPLAY_LIMIT = 64 << 10
#: RFC 9110 section 9.2.2. A proxy must not retry anything else (RFC 9112 section 9.3.1), and
#: nginx does not by default (``proxy_next_upstream`` without ``non_idempotent``).
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: draft-ietf-httpapi-idempotency-key-header (Go's http.Transport also honours the X- form):
#: the client says a repeat of this POST is safe.
_IDEMPOTENCY_KEYS = (b"idempotency-key", b"x-idempotency-key")
_IDEMPOTENCY_KEY_SIZES = frozenset(len(key) for key in _IDEMPOTENCY_KEYS)


class Exchange:
    """One request and its response, from the head arriving to the last byte relayed."""

    def __init__(self, state: ProxyState, client: ClientConnection, request: Request) -> None:
        self.state = state
        self.client = client
        self.request = request
        self.telemetry: Telemetry | None = None
        self.upstream: UpstreamConnection | None = None
        self.read_ns = 0  # last upstream byte (0: not waiting on the upstream)
        self.write_since_ns = 0  # client write blocked since (0: not blocked)
        self.outq = -1
        self._route: Route | None = None
        self._origin: Origin | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._replay: list[bytes] | None = None  # bytes sent on a reused connection, if held
        self._replay_bytes = 0
        self._facts = RequestFactsReader()
        self._captured: list[bytes] | None = [] if state.settings.capture_content else None
        self._body_bytes = 0
        self._chunked_in = False
        self._body_sent = False
        self._slot = False
        self._head_sent = False  # the response head went to the client
        self._chunked_out = False
        self._close_delimited_out = False
        self._close_delimited_in = False
        self._keep_alive = False
        self._tap: Tap | None = None
        self._ended = False

    # -- admission -------------------------------------------------------------------------------

    def start(self) -> None:
        """Admit the request (or refuse it), then open the upstream request."""
        request = self.request
        settings = self.state.settings
        target = request.target.decode("latin-1")
        path = target.partition("?")[0]
        route: Route | None = None
        refusal: Refusal | None = None
        if request.method == "CONNECT" or not target.startswith("/"):
            refusal, path = responses.BAD_TARGET, ""  # an absolute URL may carry credentials
        elif has_dot_segment(path):  # routes are an allowlist: /openai/../admin must not escape
            refusal, path = responses.BAD_PATH, ""
        elif request.method == "TRACE":
            refusal = responses.TRACE_REFUSED
        else:
            route = settings.route_for(path)
            if route is None:
                refusal = responses.NO_ROUTE
            elif self.state.draining:
                refusal = responses.DRAINING
            elif self.state.inflight >= settings.max_streams:
                refusal = responses.OVERLOADED
            elif self._content_length() > settings.max_request_body:
                refusal = responses.BODY_TOO_LARGE
        self._route = route
        origin = route.origin if route is not None else None
        self.telemetry = Telemetry(
            self.state.sinks,
            method=request.method,
            path=path,
            route=route.name if route is not None else None,
            side=settings.side_of(route) if route is not None else settings.side,
            headers=request.headers,
            api=route.api if route is not None else None,
            t_request_ns=request.t_ns,
            server=(origin[1], origin[2]) if origin is not None else ("", None),
        )
        self.state.opened(self)
        if refusal is not None or route is None or origin is None:
            self._refuse(refusal or responses.NO_ROUTE, None)
            return
        self._origin = origin
        self._chunked_in = b"chunked" in tokens(request.headers, b"transfer-encoding")
        expects = tokens(request.headers, b"expect")
        if request.version == "1.1" and b"100-continue" in expects and not request.complete:
            self.client.write(_CONTINUE)  # as nginx: the body is read now, so ask for it
        head = self._upstream_head(route)
        conn = self.state.pool.take(origin)
        if conn is not None:
            self._replay = [] if self._replayable() else None
            self._attach(conn, head)
        else:
            self._pending.append(head)
            self._connecting = asyncio.get_running_loop().create_task(self._connect(origin))

    def _replayable(self) -> bool:
        """Whether the request may be sent twice (RFC 9112 section 9.3.1), or the operator said
        any may (``--upstream-retry-non-idempotent``)."""
        request = self.request
        if request.method in _IDEMPOTENT or self.state.settings.upstream_retry_non_idempotent:
            return True
        return any(
            len(name) in _IDEMPOTENCY_KEY_SIZES and name.lower() in _IDEMPOTENCY_KEYS
            for name, _ in request.headers
        )

    def _content_length(self) -> int:
        for name, value in self.request.headers:
            if len(name) == 14 and name.lower() == b"content-length":  # (length: no copy)
                return int(value.strip() or b"0")  # llhttp accepted it: digits only
        return 0

    def _upstream_head(self, route: Route) -> bytes:
        request = self.request
        target = route.target(request.target.decode("latin-1")).raw_path_qs.encode("latin-1")
        assert self.telemetry is not None  # noqa: S101 (start() built it)
        headers = self.telemetry.inject(upstream_request_headers(request.headers))
        lines = [
            request.method.encode() + b" " + target + b" HTTP/1.1",
            b"Host: " + route.authority,
        ]
        lines += [name + b": " + value for name, value in headers]
        if self._chunked_in:
            lines.append(b"Transfer-Encoding: chunked")
        elif (length := self._content_length()) or request.method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d" % length)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _connect(self, origin: Origin) -> None:
        settings = self.state.settings
        try:
            conn = await connect(origin, self.state.tls.get(origin), settings.connect_timeout)
        except UpstreamError as exc:
            self._connecting = None
            if not self._ended:
                refusal = {"timeout": responses.UPSTREAM_TIMEOUT, "tls": responses.UPSTREAM_TLS}
                reason = (
                    "connect_timeout" if exc.kind == "timeout" else failure_reason(exc, exc.kind)
                )
                self._refuse(refusal.get(exc.kind, responses.UPSTREAM_CONNECT), exc.kind, reason)
            return
        self._connecting = None
        if self._ended:
            conn.abort()
            return
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        self._attach(conn, b"".join(pending))
        self.client.resume("connect")

    def _attach(self, conn: UpstreamConnection, data: bytes) -> None:
        self.upstream = conn
        conn.attach(self, head_only=self.request.method == "HEAD")
        self._write_upstream(conn, data)
        if self._body_sent:
            self.read_ns = time.monotonic_ns()

    def _write_upstream(self, conn: UpstreamConnection, data: bytes) -> None:
        """Send ``data``, keeping a copy while the request may still have to be sent again."""
        replay = self._replay
        if replay is not None:
            self._replay_bytes += len(data)
            if self._replay_bytes > REPLAY_LIMIT:
                self._replay = None  # streamed beyond what is held: never sent twice
            else:
                replay.append(data)
        conn.write(data)

    # -- the request body --------------------------------------------------------------------------

    def client_body(self, data: bytes) -> None:
        """A piece of the request body: scanned for facts, forwarded at once."""
        if self._ended:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.state.settings.max_request_body:
            self.client_body_error(responses.BODY_TOO_LARGE)
            return
        self._facts.feed(data)
        if self._captured is not None:
            self._captured.append(data)
        self._send(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked_in else data)

    def client_body_complete(self) -> None:
        """The request is complete: the response phase starts and takes a stream slot."""
        if self._ended:
            return
        if self._chunked_in:
            self._send(b"0\r\n\r\n")
        self._body_sent = True
        if self.telemetry is not None:
            settings = self.state.settings
            body = b"".join(self._captured) if self._captured is not None else b""
            capture = settings.capture_limit if settings.capture_content else None
            self.telemetry.facts(self._facts.facts(), body, capture)
        self._slot = True
        self.state.inflight += 1
        if self.upstream is not None:
            self.read_ns = time.monotonic_ns()  # from now on upstream silence is timed

    def _send(self, data: bytes) -> None:
        if self.upstream is not None:
            self._write_upstream(self.upstream, data)
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > _PENDING_LIMIT:
            self.client.pause("connect")

    def client_body_error(self, refusal: Refusal) -> None:
        """Body too slow, too large or malformed: 408/413/400 if nothing was answered yet, else an
        abort of both sides; the upstream request is abandoned (it never sees a complete body)."""
        if self._ended:
            return
        self._abandon_upstream()
        if not self._head_sent:
            self._refuse(refusal, None, keep_alive=False)
        else:
            self.client.reset()
            self._end(CloseCause.CLIENT_ABORT)

    # -- the response ------------------------------------------------------------------------------

    def upstream_head(self, status: int, reason: bytes, headers: Headers) -> None:
        if self._ended:
            return
        self._replay = None  # the upstream answered: this request is never sent again
        if status == 101:  # never asked for (Upgrade is not forwarded)
            self.upstream_failed("unexpected 101")
            return
        request = self.request
        te = tokens(headers, b"transfer-encoding")
        chunked = bool(te) and te[-1] == b"chunked"
        content_length: bytes | None = None  # the first Content-Length line, as it came
        content_type = content_encoding = None
        for name, value in headers:  # (a length compares without lower-casing a copy)
            size = len(name)
            if size == 14 and name.lower() == b"content-length":
                if content_length is None:
                    content_length = name + b": " + value
            elif size == 12 and name.lower() == b"content-type":
                content_type = value.decode("latin-1")
            elif size == 16 and name.lower() == b"content-encoding":
                content_encoding = value.decode("latin-1")
        has_cl = content_length is not None
        no_body = request.method == "HEAD" or status in _NO_BODY_STATUSES
        self._close_delimited_in = not no_body and not chunked and (bool(te) or not has_cl)
        keep = request.keep_alive and request.version == "1.1" and not self.state.draining
        out = client_response_headers(headers, keep_length=no_body and status != 204)
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines += [name + b": " + value for name, value in out]
        if not no_body:
            if content_length is not None and not te:
                lines.append(content_length)
            elif request.version == "1.1":
                lines.append(b"transfer-encoding: chunked")
                self._chunked_out = True
            else:
                self._close_delimited_out = True
                keep = False
        if not request.complete:
            keep = False  # the rest of the body would be read as the next request
        if not keep:
            lines.append(b"connection: close")
        self._keep_alive = keep
        self.client.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self._head_sent = True
        self.read_ns = time.monotonic_ns()
        assert self.telemetry is not None  # noqa: S101
        override = self._route.api if self._route is not None else None
        self._tap = self.telemetry.response(
            status,
            headers,
            content_type=content_type,
            content_encoding=content_encoding,
            config=self.state.analyzer_config,
            override=override,
            recorder=self.state.recorder,
        )
        if self._tap is not None and self.telemetry is not None:
            from streamwatch.proxy.state import LiveStream  # noqa: PLC0415 (import cycle)

            exchange = self.telemetry.exchange
            self.state.streams[id(self)] = LiveStream(
                exchange.request_id, exchange.route, self._tap
            )

    def upstream_body(self, data: bytes, complete: bool) -> None:
        if self._ended:
            return
        if data:
            arrived = self.read_ns = time.monotonic_ns()
            self.client.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked_out else data)
            if self._tap is not None:
                self._tap.feed(data, arrived)
        if complete:
            self._response_complete()

    def _response_complete(self) -> None:
        if self._chunked_out:
            self.client.write(b"0\r\n\r\n")
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.detach()
            if conn.reusable() and self._body_sent and self._origin is not None:
                self.state.pool.put(self._origin, conn)
            else:
                conn.abort()
        keep = self._keep_alive and self.request.complete
        self._end(CloseCause.UPSTREAM_EOF)
        self.client.exchange_done(keep_alive=keep)

    def upstream_failed(self, reason: str) -> None:
        """The upstream sent something llhttp or the relay rejects."""
        if self._ended:
            return
        log.warning("upstream.invalid_response", detail=reason)
        self._abandon_upstream()
        if not self._head_sent:
            self._refuse(responses.UPSTREAM_PROTOCOL, "protocol", "invalid_response")
        else:
            self._abort_client()
            self._end(CloseCause.UPSTREAM_RESET)

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self._ended:
            return
        conn, self.upstream = self.upstream, None
        if self._may_retry(conn):
            self._retry()
            return
        if not self._head_sent:
            if isinstance(exc, ssl.SSLError):  # e.g. a TLS alert after the handshake
                self._refuse(responses.UPSTREAM_TLS, "tls", failure_reason(exc, "tls"))
            else:
                reason = "closed" if exc is None else failure_reason(exc, "protocol")
                self._refuse(responses.UPSTREAM_PROTOCOL, "protocol", reason)
        elif self._close_delimited_in and exc is None:
            self._response_complete()  # the close is the end of this body
        else:
            self._abort_client()
            self._end(CloseCause.UPSTREAM_RESET)

    def _may_retry(self, conn: UpstreamConnection | None) -> bool:
        """A reused connection closed before any response byte, and all that was sent on it is
        held: the keep-alive race (the upstream closed the idle connection as the request came),
        so the request is sent once more on a new connection, as nginx and Envoy do."""
        return (
            self._replay is not None
            and conn is not None
            and not conn.responded
            and not self._head_sent
            and self._origin is not None
        )

    def _retry(self) -> None:
        assert self._origin is not None  # noqa: S101 (_may_retry checked it)
        assert self.telemetry is not None  # noqa: S101 (start() built it)
        self._pending, self._pending_bytes = self._replay or [], self._replay_bytes
        self._replay, self._replay_bytes = None, 0  # once: the new connection is not reused
        self.telemetry.exchange.upstream_retried = True
        log.info("upstream.retried", request_id=self.telemetry.exchange.request_id,
                 reason="stale_connection", sent_bytes=self._pending_bytes)  # fmt: skip
        self.read_ns = 0  # connecting: --connect-timeout applies, not upstream silence
        self._connecting = asyncio.get_running_loop().create_task(self._connect(self._origin))

    def _abort_client(self) -> None:
        """The upstream failed mid-body: the client must be able to tell."""
        if self._close_delimited_out:
            self.client.reset()  # a FIN would look like the end of the body
        else:
            self.client.close()  # no last chunk / short Content-Length: visibly incomplete

    # -- flow control and the watchdog ------------------------------------------------------------

    def client_flow(self, paused: bool) -> None:
        self.write_since_ns = time.monotonic_ns() if paused else 0
        if self.upstream is not None:
            self.upstream.pause_reading(paused)

    def upstream_flow(self, paused: bool) -> None:
        if paused:
            self.client.pause("upstream")
        else:
            self.client.resume("upstream")

    def upstream_timeout(self) -> None:
        """Upstream silent past ``upstream_idle_timeout``: 504 before the head, else an abort."""
        self._abandon_upstream()
        if not self._head_sent:
            self._refuse(responses.UPSTREAM_TIMEOUT, "timeout", "response_timeout")
        else:
            self.client.reset()
            self._end(CloseCause.UPSTREAM_TIMEOUT)

    def write_timeout(self) -> None:
        """The client stopped reading past ``downstream_write_timeout``: abort both sides."""
        self._abandon_upstream()
        self.client.reset()
        self._end(CloseCause.CLIENT_ABORT)

    def shutdown(self) -> None:
        """The drain deadline passed: abort both sides (never a clean end)."""
        self._abandon_upstream()
        self.client.reset()
        self._end(CloseCause.SHUTDOWN, status=503)

    def client_lost(self) -> None:
        """The client went away: close the upstream at once so the generation stops."""
        if self._ended:
            return
        if not self._body_sent:
            log.info("client.cancelled_upload", received_bytes=self._body_bytes)
        self._abandon_upstream()
        self._end(CloseCause.CLIENT_ABORT, status=CLIENT_CLOSED_REQUEST)

    # -- ending, exactly once ----------------------------------------------------------------------

    def _abandon_upstream(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        conn, self.upstream = self.upstream, None
        if conn is not None:
            conn.detach()
            conn.abort()

    def _refuse(
        self,
        refusal: Refusal,
        error_kind: str | None,
        reason: str | None = None,
        *,
        keep_alive: bool = True,
    ) -> None:
        """Answer with streamwatch's own response instead of the upstream's; ``error_kind`` and
        ``reason`` say why the upstream failed, when it did."""
        self._abandon_upstream()
        if reason is not None and self.telemetry is not None:
            self.telemetry.exchange.failure_reason = reason
        keep = (
            keep_alive
            and not refusal.close
            and self.request.complete
            and self.request.keep_alive
            and not self.state.draining
        )
        self.client.write(refusal.encode(close=not keep))
        self._end(CloseCause.UPSTREAM_EOF, status=refusal.status, error_kind=error_kind)
        self.client.exchange_done(keep_alive=keep)

    def _end(
        self, cause: CloseCause, *, status: int | None = None, error_kind: str | None = None
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self.read_ns = self.write_since_ns = 0
        self.state.streams.pop(id(self), None)
        if self._slot:
            self._slot = False
            self.state.inflight -= 1
        self.state.closed(self)
        if self.telemetry is not None:
            self.telemetry.finish(status, cause, error_kind)
