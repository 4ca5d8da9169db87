"""The guarded tap between the byte path and the analyzer: analysis can fail, forwarding cannot.

The proxy writes each upstream read to the client first and then calls :meth:`Tap.feed`. Any
exception from the analyzer stops analysis of that stream (counted once as ``AnalysisStopped``);
any exception from a watcher drops that watcher for this request. Nothing here awaits.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.events import AnalysisStopped, StreamEvent
from streamwatch.core.record import CloseCause, StreamRecord, unanalyzed_record
from streamwatch.proxy.observe import Watcher

log = structlog.get_logger("streamwatch.tap")


class Watchers:
    """Fan-out to a request's watchers; a watcher that raises is dropped for this request and logged.

    Watchers whose class sets ``wants_events = False`` (the log line needs only ``finish``) are
    left out of the per-event fan-out, which runs for every output event.
    """

    __slots__ = ("_items", "_listening")

    def __init__(self, items: Sequence[Watcher]) -> None:
        self._items = tuple(items)
        self._listening = tuple(w for w in self._items if getattr(w, "wants_events", True))

    def _drop(self, watcher: Watcher, stage: str) -> None:
        self._items = tuple(w for w in self._items if w is not watcher)
        self._listening = tuple(w for w in self._listening if w is not watcher)
        log.warning("watcher.failed", stage=stage, watcher=type(watcher).__name__, exc_info=True)

    def emit(self, events: Sequence[StreamEvent]) -> None:
        for watcher in self._listening:
            try:
                for event in events:
                    watcher.event(event)
            except Exception:
                self._drop(watcher, "event")

    def call(self, stage: str, *args: object) -> None:
        """Call ``stage`` (``inject``, ``response`` or ``finish``) on every watcher, guarded."""
        for watcher in self._items:
            try:
                getattr(watcher, stage)(*args)
            except Exception:
                self._drop(watcher, stage)


class Tap:
    """One analyzed stream: feeds the analyzer, forwards its events, survives its failure."""

    __slots__ = ("_request_model", "analyzer", "body_bytes", "failed", "watchers")

    def __init__(self, analyzer: StreamAnalyzer, watchers: Watchers) -> None:
        self.analyzer = analyzer
        self.watchers = watchers
        self.failed = False
        self.body_bytes = 0  # counted here too, so a failed analyzer still reports the volume
        self._request_model = analyzer.request_model

    def _fail(self, at_ns: int, stage: str) -> None:
        self.failed = True
        log.warning("analysis.failed", stage=stage, exc_info=True)
        self.watchers.emit((AnalysisStopped(at_ns, stage),))

    def feed(self, chunk: bytes, at_ns: int) -> None:
        """Analyze a read that has already been written to the client."""
        self.body_bytes += len(chunk)
        if self.failed:
            return
        try:
            events = self.analyzer.feed(chunk, at_ns)
        except Exception:
            self._fail(at_ns, "analyzer")
            return
        if events:
            self.watchers.emit(events)

    def poll(self, now_ns: int) -> None:
        """Watchdog tick: report a stall the moment it starts."""
        if self.failed:
            return
        try:
            events = self.analyzer.poll(now_ns)
        except Exception:
            self._fail(now_ns, "watchdog")
            return
        if events:
            self.watchers.emit(events)

    def close(self, at_ns: int, cause: CloseCause) -> StreamRecord:
        """Final record (flagged ``analysis_failed`` if analysis had stopped or fails now)."""
        if not self.failed:
            try:
                events, record = self.analyzer.close(at_ns, cause)
            except Exception:
                self._fail(at_ns, "close")
            else:
                if events:
                    self.watchers.emit(events)
                return record
        analyzer = self.analyzer
        return unanalyzed_record(
            api=analyzer.api,
            request_model=self._request_model,
            t_request_ns=analyzer.t_request_ns,
            t_end_ns=at_ns,
            cause=cause,
            body_bytes=self.body_bytes,
        )
