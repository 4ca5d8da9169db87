"""The sink port: what the proxy tells the sinks (metrics, traces, logs) about each request.

The proxy imports this module and nothing under ``export/``; the sinks import it and nothing under
``proxy/``. The composition root (:mod:`streamwatch.serve`) builds every sink once, into one
:class:`Sinks`, and hands it to the proxy.

Per request the proxy describes an :class:`Exchange` and calls :meth:`Sinks.open`. The tracer (if
tracing is on) is asked first, because it decides the request's trace id; every other sink is
then given that id as an argument (the metrics sink uses it for exemplars, the log sink writes it
on the line), so no sink reads what another sink wrote. Each sink answers with :class:`Hooks`,
leaving out the hooks it does not need. The hooks fire in this order:

1. ``upstream_request(headers)``: once, before the request is sent upstream; a sink may add
   headers (trace context). Not fired for a request streamwatch refuses itself.
2. ``response(status, api)``: the upstream's response headers arrived. A forwarded request gets
   either this hook or an upstream failure (``finish`` with ``error_kind``), never both; a client
   that leaves before the headers arrive gets neither.
3. ``events(events)``: zero or more calls, each with a non-empty batch of events in the order
   the analyzer produced them, only after ``response`` with an ``api`` (an analyzed event stream);
   then at most one :class:`AnalysisStopped` if the analyzer raised, after which no event follows.
   A read that produced any other event is delivered at once; the reads that produced only
   :class:`~streamwatch.core.events.OutputReceived` (one per token delta: nearly every read) are
   held and delivered together, before the next other event, at the next watchdog tick
   (:meth:`Fanout.flush`, every ``--watchdog-interval``), once :data:`HELD_OUTPUTS` are held, and
   before ``finish``. A metrics sink so records many output events with one update per
   instrument, and every read skips a chain of sink calls; a scrape sees them at most one tick
   late.
4. ``finish(record, error_kind)``: exactly once and always last, for every request, also refused
   ones (then it is the only hook), client aborts, upstream failures and shutdown. ``record`` is
   set for analyzed streams, ``error_kind`` when the upstream failed before answering; never both.

A hook that raises drops its sink for the rest of that request (logged once); the bytes and the
other sinks carry on. Hooks run on the event loop and must not block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from streamwatch.core.api import Api
from streamwatch.core.events import OutputReceived, StreamEvent
from streamwatch.core.prompt import Prompt
from streamwatch.core.record import StreamRecord
from streamwatch.core.side import Side

log = structlog.get_logger("streamwatch.sinks")

#: Output events a stream's fan-out holds at most before delivering them (a bound on its memory
#: between watchdog ticks, ~4 KiB; a batch this size already costs a sink little per event).
HELD_OUTPUTS = 64


@dataclass(frozen=True, slots=True)
class AnalysisStopped:
    """The analyzer raised on this stream: analysis stopped, the bytes kept flowing.

    Emitted by the proxy's tap, never by the analyzer itself; ``stage`` names where it failed
    (``analyzer``, ``watchdog`` or ``close``).
    """

    at_ns: int
    stage: str


SinkEvent = StreamEvent | AnalysisStopped
"""What the ``events`` hook receives: the analyzer's events, and the tap's note that it stopped."""

UpstreamRequestHook = Callable[[CIMultiDict[str]], None]
ResponseHook = Callable[[int, Api | None], None]
EventsHook = Callable[[Sequence[SinkEvent]], None]
FinishHook = Callable[[StreamRecord | None, str | None], None]


@dataclass(slots=True)
class Exchange:
    """One proxied request as the sinks see it: facts, never bytes. The raw incoming headers are
    there for trace-context propagation only (the proxy leaves them empty when no tracer is
    configured); ``prompt`` is read (by the core) only when content capture is on. ``status`` is
    written by the proxy alone: the response status, or the one it answered with itself.
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
    prompt: Prompt | None = None
    server_address: str = ""
    server_port: int | None = None
    status: int | None = None
    failure_reason: str | None = None  # why the upstream was not reached (proxy/failures.py)
    upstream_retried: bool = False  # sent again: a reused connection closed before answering
    side: Side = Side.CLIENT  # which side of the gateway the route watches (config)


@dataclass(frozen=True, slots=True)
class Hooks:
    """One sink's callbacks for one request (see the module docstring for when each fires); a hook
    left as ``None`` is never called, so a sink pays nothing for what it does not need."""

    upstream_request: UpstreamRequestHook | None = None
    response: ResponseHook | None = None
    events: EventsHook | None = None
    finish: FinishHook | None = None
    outputs: bool = True
    """False: ``events`` ignores ``OutputReceived``, the one event per output delta, so it is not
    called for a read that produced nothing else; when no sink wants them the analyzer does not
    build them."""


@dataclass(frozen=True, slots=True)
class Trace:
    """The tracer's answer for one request: its hooks and the trace id the other sinks are given
    (``None`` unless the trace is sampled: only sampled traces make exemplars)."""

    hooks: Hooks
    trace_id: str | None


class Tracer(Protocol):
    """The sink that starts each request's trace, before any other sink is asked."""

    def trace(self, exchange: Exchange) -> Trace | None: ...


class Sink(Protocol):
    """A sink: gives each request its hooks (or None to skip it), knowing its trace id."""

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks | None: ...


@runtime_checkable
class ConnectionSink(Protocol):
    """A sink that also counts client connections refused before any request could be read."""

    def connection_refused(self, reason: str) -> None: ...


def _name(sink: object) -> str:
    return type(sink).__name__


@dataclass(frozen=True, slots=True)
class Sinks:
    """Every sink of the process, built once by the composition root."""

    sinks: Sequence[Sink] = ()
    tracer: Tracer | None = None

    def connection_refused(self, reason: str) -> None:
        """A client connection was refused before a request was read (``reason`` is one of
        ``metricspec.CONNECTION_REFUSAL_REASONS``); told to every sink that counts them."""
        for sink in self.sinks:
            if isinstance(sink, ConnectionSink):
                try:
                    sink.connection_refused(reason)
                except Exception:
                    log.warning("sink.failed", stage="connection_refused", sink=_name(sink),
                                exc_info=True)  # fmt: skip

    def open(self, exchange: Exchange) -> Fanout:
        """Ask the tracer, then every sink, for this request's hooks; a sink that raises is skipped."""
        opened: list[tuple[str, Hooks]] = []
        trace_id: str | None = None
        if self.tracer is not None:
            try:
                trace = self.tracer.trace(exchange)
            except Exception:
                log.warning("sink.failed", stage="open", sink=_name(self.tracer), exc_info=True)
            else:
                if trace is not None:
                    opened.append((_name(self.tracer), trace.hooks))
                    trace_id = trace.trace_id
        for sink in self.sinks:
            try:
                hooks = sink.watch(exchange, trace_id)
            except Exception:
                log.warning("sink.failed", stage="open", sink=_name(sink), exc_info=True)
                continue
            if hooks is not None:
                opened.append((_name(sink), hooks))
        return Fanout(opened)


class Fanout:
    """One request's hooks, called in sink order and guarded: a sink whose hook raises is dropped
    for the rest of this request and logged. Only sinks with an ``events`` hook are in the
    per-read fan-out; output events alone are held and delivered in batches (the module
    docstring, step 3), to the sinks that take them only (``Hooks.outputs`` false: the tracer,
    which waits for rarer events)."""

    __slots__ = ("_held", "_hooks", "_listening", "_taking_outputs")

    def __init__(self, hooks: Sequence[tuple[str, Hooks]]) -> None:
        self._hooks = tuple(hooks)
        self._held: list[SinkEvent] = []
        self._listen()

    def _listen(self) -> None:
        self._listening = tuple((h, h.events) for _, h in self._hooks if h.events is not None)
        self._taking_outputs = tuple((h, e) for h, e in self._listening if h.outputs)

    def _drop(self, hooks: Hooks, stage: str) -> None:
        name = next(n for n, h in self._hooks if h is hooks)
        self._hooks = tuple((n, h) for n, h in self._hooks if h is not hooks)
        self._listen()
        log.warning("sink.failed", stage=stage, sink=name, exc_info=True)

    def upstream_request(self, headers: CIMultiDict[str]) -> None:
        for _, hooks in self._hooks:
            if hooks.upstream_request is not None:
                try:
                    hooks.upstream_request(headers)
                except Exception:
                    self._drop(hooks, "upstream_request")

    def response(self, status: int, api: Api | None) -> None:
        for _, hooks in self._hooks:
            if hooks.response is not None:
                try:
                    hooks.response(status, api)
                except Exception:
                    self._drop(hooks, "response")

    @property
    def adds_headers(self) -> bool:
        """Whether a sink has an ``upstream_request`` hook (if none, the headers need no copy)."""
        return any(hooks.upstream_request is not None for _, hooks in self._hooks)

    @property
    def wants_outputs(self) -> bool:
        """Whether a sink takes ``OutputReceived`` events (if none, the analyzer builds none)."""
        return bool(self._taking_outputs)

    def emit(self, events: Sequence[SinkEvent]) -> None:
        """One read's events (non-empty): held if they are all output events, else delivered to
        every listening sink, in one call each, after the held ones (to the sinks taking them)."""
        for event in events:  # a plain loop: a generator for ``all`` costs more than the test
            if type(event) is not OutputReceived:
                break
        else:
            held = self._held
            held += events
            if len(held) >= HELD_OUTPUTS:
                self.flush()
            return
        self.flush()
        self._deliver(self._listening, events)

    def flush(self) -> None:
        """Deliver the held output events (the watchdog's tick, and before ``finish``)."""
        if self._held:
            held, self._held = self._held, []
            self._deliver(self._taking_outputs, held)

    def _deliver(
        self, listening: tuple[tuple[Hooks, EventsHook], ...], events: Sequence[SinkEvent]
    ) -> None:
        for hooks, on_events in listening:
            try:
                on_events(events)
            except Exception:
                self._drop(hooks, "event")

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        self.flush()
        for _, hooks in self._hooks:
            if hooks.finish is not None:
                try:
                    hooks.finish(record, error_kind)
                except Exception:
                    self._drop(hooks, "finish")
