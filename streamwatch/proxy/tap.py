"""The guarded tap between the byte path and the analyzer: analysis can fail, forwarding cannot.

The proxy writes each upstream read to the client first and then calls :meth:`Tap.feed`. Any
exception from the analyzer stops analysis of that stream (counted once as ``AnalysisStopped``);
the events go to the request's :class:`~streamwatch.sinks.Fanout`, which drops a sink that
raises. With ``--capture-dir`` the read also goes, before analysis (so a stream whose analysis
failed is still captured), to its :class:`~streamwatch.proxy.recorder.StreamCapture`, which only
queues it. Nothing here awaits.
"""

from __future__ import annotations

import structlog

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.record import CloseCause, StreamRecord, unanalyzed_record
from streamwatch.proxy.recorder import StreamCapture
from streamwatch.sinks import AnalysisStopped, Fanout

log = structlog.get_logger("streamwatch.tap")


class Tap:
    """One analyzed stream: feeds the analyzer, forwards its events, survives its failure."""

    __slots__ = ("_request_model", "analyzer", "body_bytes", "capture", "failed", "sinks")

    def __init__(
        self, analyzer: StreamAnalyzer, sinks: Fanout, capture: StreamCapture | None = None
    ) -> None:
        self.analyzer = analyzer
        self.sinks = sinks
        self.capture = capture
        self.failed = False
        self.body_bytes = 0  # counted here too, so a failed analyzer still reports the volume
        self._request_model = analyzer.request_model

    def _fail(self, at_ns: int, stage: str) -> None:
        self.failed = True
        log.warning("analysis.failed", stage=stage, exc_info=True)
        self.sinks.emit((AnalysisStopped(at_ns, stage),))

    def feed(self, chunk: bytes, at_ns: int) -> None:
        """Analyze a read that has already been written to the client."""
        self.body_bytes += len(chunk)
        if self.capture is not None:
            self.capture.feed(chunk, at_ns)
        if self.failed:
            return
        try:
            events = self.analyzer.feed(chunk, at_ns)
        except Exception:
            self._fail(at_ns, "analyzer")
            return
        if events:
            self.sinks.emit(events)

    def poll(self, now_ns: int) -> None:
        """Watchdog tick: deliver the output events the fan-out holds, and report a stall the
        moment it starts."""
        self.sinks.flush()
        if self.failed:
            return
        try:
            events = self.analyzer.poll(now_ns)
        except Exception:
            self._fail(now_ns, "watchdog")
            return
        if events:
            self.sinks.emit(events)

    def close(self, at_ns: int, cause: CloseCause) -> StreamRecord:
        """Final record (flagged ``analysis_failed`` if analysis had stopped or fails now); the
        capture, if any, is kept or dropped by it."""
        record = self._record(at_ns, cause)
        if self.capture is not None:
            self.capture.close(record)
        return record

    def _record(self, at_ns: int, cause: CloseCause) -> StreamRecord:
        if not self.failed:
            try:
                events, record = self.analyzer.close(at_ns, cause)
            except Exception:
                self._fail(at_ns, "close")
            else:
                if events:
                    self.sinks.emit(events)
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
