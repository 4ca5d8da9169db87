"""Every call from the relay into the sinks, for one request, in one place.

The relay builds one :class:`Telemetry` per request and calls it at five moments: ``start``
(request head parsed), ``inject`` (upstream request headers, trace context), ``facts`` (the body's
model and stream flag, once it is complete), ``response`` (upstream answered; builds the analyzer
tap for event streams), ``feed`` (each relayed read), ``finish`` (exactly once, whatever happened).
Headers cross this seam as ``latin-1`` strings, which maps every byte to one character and back,
so trace headers added by a sink and the client's own header bytes reach the upstream unaltered.
Nothing here raises into the relay: telemetry that fails is logged and left out, the bytes go on.
"""

from __future__ import annotations

import os
import time

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from streamwatch.core.analyzer import AnalyzerConfig, StreamAnalyzer
from streamwatch.core.announced import header_timings
from streamwatch.core.api import Api
from streamwatch.core.capture import CaptureHeader
from streamwatch.core.limits import MAX_PATH_CHARS, MAX_REQUEST_ID_CHARS, cap
from streamwatch.core.record import CloseCause, StreamRecord
from streamwatch.core.request import RequestFacts, api_for_path, complete_facts, select_api
from streamwatch.core.side import Side
from streamwatch.proxy.headers import Headers
from streamwatch.proxy.recorder import Recorder
from streamwatch.proxy.tap import Tap
from streamwatch.sinks import Exchange, Fanout, Sinks

log = structlog.get_logger("streamwatch.telemetry")

UNMATCHED_ROUTE = "unmatched"  # route label of requests no configured route accepts


#: The version (4) and variant (RFC 9562) bits of a random UUID, as an integer mask and value.
_UUID4_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as ``uuid.uuid4().hex`` writes it, from the same
    122 bits of ``os.urandom``, without building a ``uuid.UUID`` (a third of the cost)."""
    return "%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_MASK | _UUID4_BITS)


def _request_id(headers: Headers) -> str:
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"x-request-id":  # (length: no copy)
            given = value.decode("latin-1")
            if (
                given
                and len(given) <= MAX_REQUEST_ID_CHARS
                and given.isascii()
                and given.isprintable()
            ):
                return given
            break
    return new_request_id()


#: An exchange's headers when no sink reads them: only the tracer does (trace context), so without
#: one a request's headers are not converted at all.
_UNREAD: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def _as_text(headers: Headers) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        out.add(name.decode("latin-1"), value.decode("latin-1"))
    return out


class Telemetry:
    """One request's watchers and, for event streams, its analyzer tap."""

    __slots__ = ("exchange", "tap", "watchers")

    def __init__(
        self,
        sinks: Sinks,
        *,
        method: str,
        path: str,
        route: str | None,
        side: Side,
        headers: Headers,
        api: Api | None = None,
        t_request_ns: int,
        server: tuple[str, int | None],
    ) -> None:
        self.exchange = Exchange(
            request_id=_request_id(headers),
            route=route or UNMATCHED_ROUTE,
            method=cap(method),
            path=cap(path, MAX_PATH_CHARS),
            # the route's api: override, else the path's: a custom path still has its facts read
            api=(api or api_for_path(path)) if route is not None else None,
            request_model=None,
            stream_requested=None,
            t_request_ns=t_request_ns,
            headers=CIMultiDictProxy(_as_text(headers)) if sinks.tracer is not None else _UNREAD,
            server_address=server[0],
            server_port=server[1],
            side=side,
        )
        self.tap: Tap | None = None
        try:
            self.watchers = sinks.open(self.exchange)
        except Exception:  # forwarding never depends on telemetry: this request goes without it
            log.warning("telemetry.failed", stage="start", request_id=self.exchange.request_id,
                        exc_info=True)  # fmt: skip
            self.watchers = Fanout(())

    def inject(self, headers: Headers) -> Headers:
        """The upstream request headers after every sink added its own (trace context); the same
        list when no sink adds any."""
        if not self.watchers.adds_headers:
            return headers
        text = _as_text(headers)
        self.watchers.upstream_request(text)
        try:
            return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in text.items()]
        except UnicodeEncodeError:  # a sink added a header no HTTP/1.1 message can carry
            log.warning("telemetry.failed", stage="upstream_request", exc_info=True)
            return headers

    def facts(self, facts: RequestFacts, body: bytes, capture_limit: int | None) -> None:
        """The request body is complete: what it (or the path) said, and its prompt when content
        capture is on (``body`` is then the whole body). Only requests to an LLM API path have
        facts."""
        if self.exchange.api is None:
            return
        try:
            facts = complete_facts(facts, body, self.exchange.path, capture_limit)
        except Exception:  # the facts are telemetry: the request goes on without them
            log.warning("telemetry.failed", stage="facts", exc_info=True)
            return
        self.exchange.request_model = facts.model
        self.exchange.stream_requested = facts.stream
        self.exchange.prompt = facts.prompt

    def response(
        self,
        status: int,
        headers: Headers,
        *,
        content_type: str | None,
        content_encoding: str | None,
        config: AnalyzerConfig,
        override: Api | None,
        recorder: Recorder | None = None,
    ) -> Tap | None:
        """Upstream answered: tell the sinks, start analysis of an uncompressed event stream
        (with the durations its headers announced) and, with a ``recorder``, its capture."""
        exchange = self.exchange
        exchange.status = status
        api: Api | None = None
        if (content_encoding or "identity").strip().lower() in ("", "identity"):
            api = select_api(exchange.path, content_type, override)
        self.watchers.response(status, api)
        if api is not None:
            try:
                analyzer = StreamAnalyzer(
                    api,
                    exchange.t_request_ns,
                    request_model=exchange.request_model,
                    config=config,
                    report_outputs=self.watchers.wants_outputs,
                    announced=header_timings(headers),
                )
            except Exception:  # called from the upstream parser: raising would cut the stream
                log.warning("telemetry.failed", stage="response", exc_info=True)
                return None
            capture = None
            if recorder is not None:
                media = cap(content_type) if content_type is not None else None
                header = CaptureHeader(
                    exchange.method, exchange.path, status, media, exchange.request_model
                )
                capture = recorder.open(header, exchange.t_request_ns, exchange.request_id)
            self.tap = Tap(analyzer, self.watchers, capture)
        return self.tap

    def finish(self, status: int | None, cause: CloseCause, error_kind: str | None) -> None:
        """The request ended (exactly once): final record for streams, status for all."""
        if self.exchange.status is None:
            self.exchange.status = status
        record: StreamRecord | None = None
        if self.tap is not None:
            record = self.tap.close(time.monotonic_ns(), cause)
        self.watchers.finish(record, error_kind)
