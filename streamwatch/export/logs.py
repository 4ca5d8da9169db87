"""One canonical structlog line per stream (``stream.completed``, ``stream.truncated``, ...).

JSON by default (console rendering on a TTY), written by a thread of their own
(:mod:`streamwatch.export.log_pipe`), so a log reader that stops reading never stalls a stream.
Lines carry numbers, ids and bounded names only: no headers, no bodies, no URLs with queries, no
completion text unless content capture is enabled.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from typing import Any, TextIO

import orjson
import structlog

from streamwatch.config import LOG_QUEUE_LINES
from streamwatch.core.record import StreamRecord
from streamwatch.export.log_pipe import LogPipe
from streamwatch.sinks import Exchange, Hooks

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class _QueuedLogger:
    """structlog's logger interface over a :class:`LogPipe`: a rendered line is queued, never
    written on the caller's thread, so a log output that stopped taking lines blocks no stream."""

    __slots__ = ("_pipe",)

    def __init__(self, pipe: LogPipe) -> None:
        self._pipe = pipe

    def msg(self, message: str) -> None:
        self._pipe.put(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _PipeHandler(logging.Handler):
    """A :mod:`logging` handler that queues each record's line on a :class:`LogPipe`."""

    def __init__(self, pipe: LogPipe) -> None:
        super().__init__()
        self._pipe = pipe

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pipe.put(self.format(record))
        except Exception:  # logging's own contract: report it, never raise
            self.handleError(record)


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    queue_lines: int = LOG_QUEUE_LINES,
) -> LogPipe:
    """Configure structlog once, in the entry point (never at import time); returns the pipe whose
    writer thread writes the lines to ``stream`` (stderr), drained at exit."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        renderer,
    ]

    def render(fields: dict[str, Any]) -> str:  # the pipe's own notes, on its writer thread
        event: Any = fields
        for processor in processors:
            event = processor(None, "warning", event)
        return str(event)

    pipe = LogPipe(out.fileno(), queue_lines, render)
    atexit.register(pipe.close)
    # The standard library's loggers (asyncio, aiohttp) through the same pipe, as JSON lines too:
    # left alone they fall to logging's last resort, a blocking write to stderr on the event loop.
    standard = _PipeHandler(pipe)
    standard.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *processors[1:-1]],
        )
    )
    threshold = _LEVELS.get(level, logging.ERROR)
    logging.basicConfig(handlers=[standard], level=max(threshold, logging.WARNING), force=True)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=lambda *_: _QueuedLogger(pipe),
        cache_logger_on_first_use=True,
    )
    return pipe


def _s(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e9, 6)


def stream_fields(record: StreamRecord) -> dict[str, Any]:
    """Every number of a stream record, flattened for one log line."""
    usage = record.usage
    fields: dict[str, Any] = {
        "api": record.api.value,
        "model": record.model,
        "request_model": record.request_model,
        "response_id": record.response_id,
        "outcome": record.outcome.value,
        "close_cause": record.close_cause.value,
        "duration_s": _s(record.duration_ns),
        "ttfb_s": _s(record.ttfb_ns),
        "ttft_s": _s(record.ttft_ns),
        "max_gap_s": _s(record.max_gap_ns),
        "output_events": record.output_events,
        "output_tokens": record.output_tokens,
        "output_tokens_estimated": record.output_tokens_estimated,
        "tokens_per_second": (
            None if record.tokens_per_second is None else round(record.tokens_per_second, 3)
        ),
        "input_tokens": usage.input_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "cached_input_tokens": usage.cached_input_tokens if usage else None,
        "finish_reasons": list(record.finish_reasons),
        "terminal_frame": record.terminal_frame,
        "error_frames": [e.error_type for e in record.error_frames],
        "stalls": len(record.stalls),
        "stalled_s": round(
            sum(((s.end_ns or record.t_end_ns) - s.start_ns) for s in record.stalls) / 1e9, 6
        ),
        "frames": record.frames,
        "body_bytes": record.body_bytes,
        "malformed_frames": record.malformed_frames,
        "oversize_events": record.oversize_events,
        "undispatched_tail": record.undispatched_tail,
        "tool_calls": len(record.tool_calls),
        "analysis_failed": record.analysis_failed,
    }
    if record.upstream_timings:  # only where the upstream reported any (frames or headers)
        fields["upstream_timings_s"] = {name: _s(ns) for name, ns in record.upstream_timings}
    if record.captured_text is not None:
        fields["completion"] = record.captured_text
    return fields


class _LogLine:
    """The one line of one request, written when it finishes."""

    __slots__ = ("_exchange", "_log", "_trace_id")

    def __init__(self, exchange: Exchange, trace_id: str | None, logger: Any) -> None:
        self._exchange = exchange
        self._trace_id = trace_id
        self._log = logger

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        ex = self._exchange
        common = {
            "request_id": ex.request_id,
            "route": ex.route,
            "side": ex.side.value,
            "method": ex.method,
            "path": ex.path,
            "status": ex.status,
            "trace_id": self._trace_id,
        }
        if ex.upstream_retried:
            common["upstream_retried"] = True
        if record is not None:
            self._log.info(f"stream.{record.outcome.value}", **common, **stream_fields(record))
        elif error_kind is not None:
            self._log.warning(
                "upstream.failed",
                **common,
                upstream=f"{ex.server_address}:{ex.server_port}",
                kind=error_kind,
                reason=ex.failure_reason,
            )
        else:
            duration = _s(time.monotonic_ns() - ex.t_request_ns)
            self._log.info("request.completed", **common, duration_s=duration)


class LogSink:
    """Logs one line per request: ``stream.<outcome>`` for streams, else ``request.completed``.

    Only a ``finish`` hook: the per-event fan-out never calls this sink.
    """

    def __init__(self) -> None:
        self._log = structlog.get_logger("streamwatch.stream")

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        return Hooks(finish=_LogLine(exchange, trace_id, self._log).finish)
