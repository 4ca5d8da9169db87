"""The seam between the proxy and its sinks (metrics, traces, logs).

The proxy knows nothing about Prometheus, OpenTelemetry or structlog: for each request it asks every
:class:`Observer` for a :class:`Watcher` and reports to it, in this order and exactly once each:
``inject`` (before the upstream request), ``response`` (upstream headers arrived; absent if upstream
failed first), ``event`` (zero or more live stream events) and ``finish`` (always, also on client
abort, upstream failure or shutdown). A watcher that raises is dropped for that request and the
fault is logged; the bytes keep flowing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from streamwatch.core.events import Api, StreamEvent
from streamwatch.core.record import StreamRecord


@dataclass(slots=True)
class Exchange:
    """One proxied request as the sinks see it. The raw incoming headers are there for trace-context
    propagation only; ``body`` is filled only when content capture is on.
    """

    request_id: str
    route: str
    method: str
    path: str  # without the query string (queries may carry keys)
    api: Api | None  # from the path; None for paths that are not an LLM API
    request_model: str | None
    stream_requested: bool | None
    t_request_ns: int
    headers: CIMultiDictProxy[str]
    body: bytes = b""
    server_address: str = ""
    server_port: int | None = None
    trace_id: str | None = None  # set by the tracing watcher; metrics use it as the exemplar
    status: int | None = None


class Watcher(Protocol):
    """Per-request callbacks of one sink."""

    def inject(self, headers: CIMultiDict[str]) -> None:
        """Add headers to the upstream request (trace context); most sinks add nothing."""

    def response(self, status: int, api: Api | None) -> None:
        """Upstream answered; ``api`` is set when the body is an event stream being analyzed."""

    def event(self, event: StreamEvent) -> None:
        """A live stream event, in order, as soon as the analyzer produced it."""

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        """The request ended; ``record`` for analyzed streams, ``error_kind`` if upstream failed."""


class Observer(Protocol):
    """A sink: gives each request its own watcher (or None to skip it)."""

    def watch(self, exchange: Exchange) -> Watcher | None: ...
