"""The proxy port's aiohttp server, plus the one limit aiohttp lacks: a request-header deadline.

It also replaces aiohttp's logging of malformed requests: aiohttp logs each one as an ERROR with a
traceback that quotes the offending request bytes (which may hold a credential, e.g. a header
value with a stray NUL). A malformed request is the client's fault: one warning line naming the
error class, no request bytes.

aiohttp bounds header *size* (8190-byte lines, 128 fields) but not header *time*: a client sending
one byte every few seconds holds a connection and a task for as long as it likes (slowloris); only
the keep-alive timeout (an hour) ends it. Each connection here gets a deadline for a complete
header block, armed when the connection opens and again at the first byte of each further request
on it, disarmed when the headers have been parsed. A connection that misses it is closed. An idle
kept-alive connection is not timed by it (the keep-alive timeout covers that), so a load balancer's
pooled connections are not cut early.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("streamwatch.proxy")


class _DeadlineHandler(RequestHandler):
    """aiohttp's connection handler with a request-header deadline.

    Reads three private fields of :class:`RequestHandler` (``_request_count``,
    ``_request_in_progress``, ``_messages``); ``tests/reliability/test_limits.py`` pins the
    behaviour against the aiohttp version in use.
    """

    __slots__ = ("_header_timeout", "_header_timer")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and not self._request_in_progress and not self._messages:
            self._arm()  # the first byte of another request on a kept-alive connection
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()  # a complete header block arrived

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            log.warning("client.bad_request", error=type(exc).__name__, status=exc.code)
            return
        super().log_exception(*args, **kw)

    def _expire(self) -> None:
        self._header_timer = None
        self.force_close()


class ProxyServer(web.Server):
    """:class:`aiohttp.web.Server` whose connections enforce ``request_header_timeout``."""

    def __init__(self, handler: Any, *, request_header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._header_timeout = request_header_timeout

    def __call__(self) -> RequestHandler:
        return _DeadlineHandler(
            self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs
        )
