"""Caps on every string that comes from a client or an upstream, applied once, where it enters.

A string read from a request or a response (a model name, a response or request id, a tool name,
an error type or message, a path) reaches logs, ``/debug/streams``, span attributes and label
values. Uncapped, one 5 MB ``model`` field makes a 5 MB log line and a trace batch the collector
rejects, losing other users' spans. Each string is cut here, at the edge, so no sink needs its own
limit.
"""

from __future__ import annotations

MAX_FIELD_CHARS = 256
"""Strings a client or upstream names: model, response id, tool name, finish reason, error type
and error message."""

MAX_REQUEST_ID_CHARS = 128
"""A client's ``X-Request-Id``; a longer one is replaced by a generated id, not cut."""

MAX_PATH_CHARS = 2048
"""A request path as telemetry sees it (the upstream still receives it whole)."""


def cap(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit]


# -- accumulators an upstream controls -----------------------------------------------------------
# A stream's record keeps lists and maps whose size the upstream decides. Each has a cap, injectable
# through ``AnalyzerConfig``, far above any real stream, so a hostile or broken upstream costs a
# bounded amount of memory per stream (and per log line and span) however long it runs.

MAX_ERROR_FRAMES = 16
"""Error frames kept in a record (all are still counted and reported live); real streams end at
the first."""

MAX_CHOICES = 16
"""Distinct choice indexes whose finish reason is kept (``n`` > 16 is not seen in practice; the
index is chosen by the upstream, so without a cap each new index would add an entry)."""

MAX_TOOL_CALLS = 128
"""Distinct tool calls tracked per stream (parallel tool calls come in the tens at most)."""

MAX_PROMPT_MESSAGES = 256
"""Messages of a captured prompt (content capture only); later ones are left out."""

MAX_PROMPT_PARTS = 256
"""Parts of a captured prompt, across all its messages; later ones are left out."""
