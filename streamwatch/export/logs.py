"""One canonical structlog line per stream (``stream.completed``, ``stream.truncated``, ...).

JSON by default (console rendering on a TTY), written by a thread of their own
(:mod:`streamwatch.export.log_pipe`), so a log reader that stops reading never stalls a stream.
Lines carry numbers, ids and bounded names only: no headers, no bodies, no URLs with queries, no
completion text unless content capture is enabled.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import sys
import time
from collections.abc import Callable
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


class UtcIsoStamper:
    """Adds ``timestamp`` exactly as ``structlog.processors.TimeStamper(fmt="iso", utc=True)``
    writes it (``datetime.isoformat`` with ``Z``: ``2026-12-02T04:05:06.123456Z``, no fraction at a
    whole second) for a third of its cost: the date and time of day are formatted once a second, and
    a line adds only its microseconds. ``datetime.now`` floors the same clock to the microsecond."""

    __slots__ = ("_clock", "_second")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")  # one tuple: a thread reads both or neither

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        second, micros = divmod(self._clock() // 1000, 1_000_000)
        known, text = self._second
        if second != known:
            at = datetime.datetime.fromtimestamp(second, datetime.UTC)
            text = at.isoformat(timespec="seconds")[:19]
            self._second = (second, text)
        if micros:
            event_dict["timestamp"] = "%s.%06dZ" % (text, micros)  # noqa: UP031 (cheaper than f"")
        else:
            event_dict["timestamp"] = text + "Z"
        return event_dict


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
        UtcIsoStamper(),
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


#: Durations below this (10**6 s, 11.6 days) are rounded to the microsecond on the integer: the
#: float ``ns / 1e9`` is then within 0.06 ns of the exact quotient (half an ulp), and an integer
#: ``ns`` not at a tie (500 ns past a microsecond) is at least 1 ns from one, so ``round`` on the
#: float picks the same microsecond ``k``; ``k / 1e6``, correctly rounded, is the float ``round``
#: returns (the double nearest its decimal result).
_EXACT_NS = 10**15


def seconds(ns: int | None) -> float | None:
    """``round(ns / 1e9, 6)``, seconds to the microsecond, for half of ``round``'s cost (its
    decimal conversion); ties, negative and huge values take ``round`` itself."""
    if ns is None:
        return None
    if 0 <= ns < _EXACT_NS and ns % 1000 != 500:
        return (ns + 500) // 1000 / 1e6
    return round(ns / 1e9, 6)


def stream_fields(record: StreamRecord) -> dict[str, Any]:
    """Every number of a stream record, flattened for one log line.

    Enum values are read as ``_value_`` (the member's value itself), not through ``.value``'s
    property; empty tuples skip their comprehension: this runs once per stream.
    """
    usage = record.usage
    fields: dict[str, Any] = {
        "api": record.api._value_,
        "model": record.model,
        "request_model": record.request_model,
        "response_id": record.response_id,
        "outcome": record.outcome._value_,
        "close_cause": record.close_cause._value_,
        "duration_s": seconds(record.duration_ns),
        "ttfb_s": seconds(record.ttfb_ns),
        "ttft_s": seconds(record.ttft_ns),
        "max_gap_s": seconds(record.max_gap_ns),
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
        "error_frames": [e.error_type for e in record.error_frames] if record.error_frames else [],
        "stalls": len(record.stalls),
        "stalled_s": (
            seconds(sum(((s.end_ns or record.t_end_ns) - s.start_ns) for s in record.stalls))
            if record.stalls
            else 0.0
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
        fields["upstream_timings_s"] = {name: seconds(ns) for name, ns in record.upstream_timings}
    if record.captured_text is not None:
        fields["completion"] = record.captured_text
    return fields


def log_fields(log: Any, name: str, event: str, fields: dict[str, Any]) -> None:
    """``log.<level>(event, **fields)`` without its four copies of ``fields`` as keyword arguments
    (about 50k instructions a stream line): structlog's own ``_process_event`` (the step its
    wrapper classes share, there for custom wrappers) on the dict itself, then the wrapped logger's
    method, as the bound logger's ``_proxy_to_logger`` does; below the level, nothing."""
    if not log.is_enabled_for(_LEVELS[name]):
        return
    try:
        args, kw = log._process_event(name, event, fields)
    except structlog.DropEvent:
        return
    getattr(log._logger, name)(*args, **kw)


class _LogLine:
    """The one line of one request, written when it finishes."""

    __slots__ = ("_exchange", "_sink", "_trace_id")

    def __init__(self, exchange: Exchange, trace_id: str | None, sink: LogSink) -> None:
        self._exchange = exchange
        self._trace_id = trace_id
        self._sink = sink

    def finish(self, record: StreamRecord | None, error_kind: str | None) -> None:
        ex = self._exchange
        fields: dict[str, Any] = {
            "request_id": ex.request_id,
            "route": ex.route,
            "side": ex.side._value_,
            "method": ex.method,
            "path": ex.path,
            "status": ex.status,
            "trace_id": self._trace_id,
        }
        if ex.upstream_retried:
            fields["upstream_retried"] = True
        if record is not None:
            fields.update(stream_fields(record))
            event, level = "stream." + record.outcome._value_, "info"
        elif error_kind is not None:
            fields["upstream"] = f"{ex.server_address}:{ex.server_port}"
            fields["kind"] = error_kind
            fields["reason"] = ex.failure_reason
            event, level = "upstream.failed", "warning"
        else:
            fields["duration_s"] = seconds(time.monotonic_ns() - ex.t_request_ns)
            event, level = "request.completed", "info"
        log_fields(self._sink.logger(), level, event, fields)


class LogSink:
    """Logs one line per request: ``stream.<outcome>`` for streams, else ``request.completed``.

    Only a ``finish`` hook: the per-event fan-out never calls this sink.
    """

    def __init__(self) -> None:
        self._proxy = structlog.get_logger("streamwatch.stream")
        self._log: Any = None

    def logger(self) -> Any:
        """The bound logger, resolved at the first line, not here (``serve`` configures logging
        after building the sinks); kept where structlog caches loggers on first use (as
        ``configure_logging`` asks), as the lazy proxy would keep it, without the proxy's
        ``__getattr__`` and ``bind`` on every line; else resolved for each line, as the proxy does."""
        log = self._log
        if log is None:
            log = self._proxy.bind()
            if structlog.get_config()["cache_logger_on_first_use"]:
                self._log = log
        return log

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        return Hooks(finish=_LogLine(exchange, trace_id, self).finish)
