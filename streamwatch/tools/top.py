"""``streamwatch top``: the open streams of a running instance, live, worst silence first.

Polls the admin listener: ``/debug/streams`` (schema in ``docs/debug-streams.md``) for the open
streams and ``/metrics`` for the outcomes of the last minute (deltas of
``streamwatch_streams_total``, so it works unchanged against ``--workers N``, whose parent sums
the workers' counters). The view never shows more than the admin endpoint does: no headers, no
content, no secrets.

The terminal UI is Textual (an optional extra, ``pip install 'streamwatch[top]'``): it gives a
scrollable table, key bindings and a filter input on any terminal, tmux included, where a
hand-written curses loop would re-implement all three. The data side (:class:`View`) is plain
Python so it can be tested without a terminal.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streamwatch.metricspec import STREAMS

SCHEMA_VERSION = 1  # the /debug/streams schema this view reads
WINDOW_S = 60.0  # "outcomes over the last minute"
SORT_KEYS = ("silence", "age", "ttft", "tokens", "model")
_COLUMNS = ("route", "api", "model", "age s", "TTFT s", "tokens", "silence s", "stalled", "request")


@dataclass(frozen=True, slots=True)
class Row:
    """One open stream as ``/debug/streams`` describes it."""

    request_id: str
    route: str
    api: str
    model: str
    age_s: float
    ttft_s: float | None
    output_events: int
    silence_s: float
    stalled: bool

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Row:
        return cls(
            request_id=str(item.get("request_id", ""))[:32],
            route=str(item.get("route", "")),
            api=str(item.get("api", "")),
            model=str(item.get("model") or "-"),
            age_s=float(item.get("age_s") or 0.0),
            ttft_s=None if item.get("ttft_s") is None else float(item["ttft_s"]),
            output_events=int(item.get("output_events") or 0),
            silence_s=float(item.get("silence_s") or 0.0),
            stalled=bool(item.get("stalled")),
        )

    def cells(self) -> tuple[str, ...]:
        return (
            self.route,
            self.api,
            self.model[:40],
            f"{self.age_s:.1f}",
            "-" if self.ttft_s is None else f"{self.ttft_s:.3f}",
            str(self.output_events),
            f"{self.silence_s:.1f}",
            "STALLED" if self.stalled else "",
            self.request_id,
        )


def _sort_key(name: str) -> Any:
    keys: dict[str, Any] = {
        "silence": lambda r: r.silence_s,
        "age": lambda r: r.age_s,
        "ttft": lambda r: -1.0 if r.ttft_s is None else r.ttft_s,
        "tokens": lambda r: r.output_events,
        "model": lambda r: r.model,
    }
    return keys[name]


def outcome_totals(metrics_text: str) -> dict[str, float]:
    """``streamwatch_streams_total`` summed by outcome over every other label."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == STREAMS.name:
                outcome = sample.labels.get("outcome", "")
                totals[outcome] = totals.get(outcome, 0.0) + sample.value
    return totals


@dataclass
class View:
    """What the screen shows: sorted, filtered rows and the last minute's outcomes."""

    sort: str = "silence"
    descending: bool = True
    text_filter: str = ""
    stalled_only: bool = False
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    _history: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)

    def update(self, streams: Mapping[str, Any], metrics_text: str | None, now: float) -> None:
        """Take one poll's answers (``now`` in monotonic seconds)."""
        version = streams.get("version")
        if version != SCHEMA_VERSION:
            self.error = f"unsupported /debug/streams schema version {version!r}"
            self.rows = []
            return
        self.error = None
        self.rows = [Row.from_json(item) for item in streams.get("streams", ())]
        if metrics_text is not None:
            self._history.append((now, outcome_totals(metrics_text)))
            while len(self._history) > 2 and now - self._history[1][0] >= WINDOW_S:
                self._history.popleft()

    def visible(self) -> list[Row]:
        needle = self.text_filter.lower()
        rows = [
            r
            for r in self.rows
            if (not self.stalled_only or r.stalled)
            and (not needle or needle in f"{r.route} {r.api} {r.model}".lower())
        ]
        return sorted(rows, key=_sort_key(self.sort), reverse=self.descending)

    def last_minute(self) -> dict[str, int]:
        """Streams ended per outcome since the oldest sample in the window."""
        if len(self._history) < 2:
            return {}
        (_, first), (_, last) = self._history[0], self._history[-1]
        return {
            k: round(v - first.get(k, 0.0))
            for k, v in sorted(last.items())
            if v > first.get(k, 0.0)
        }

    def summary(self) -> str:
        stalled = sum(r.stalled for r in self.rows)
        mix = " ".join(f"{k}={v}" for k, v in self.last_minute().items()) or "none"
        shown = self.visible()
        extra = f" (showing {len(shown)})" if len(shown) != len(self.rows) else ""
        order = "desc" if self.descending else "asc"
        return (
            f"open {len(self.rows)}{extra}  stalled {stalled}  |  last minute: {mix}  |  "
            f"sort {self.sort} {order}  filter {self.text_filter or '-'}"
            f"{'  stalled only' if self.stalled_only else ''}"
        )


class Poller:
    """Reads the admin endpoint; a failed poll becomes a message on screen, never a crash."""

    def __init__(self, base: str, timeout: float = 2.0) -> None:
        self._client = httpx.Client(base_url=base, timeout=timeout)

    def poll(self, view: View) -> None:
        try:
            streams = self._client.get("/debug/streams")
            streams.raise_for_status()
            metrics = self._client.get("/metrics")
            metrics_text = metrics.text if metrics.status_code == 200 else None
            view.update(streams.json(), metrics_text, time.monotonic())
        except (httpx.HTTPError, ValueError) as exc:
            view.error = f"cannot read {self._client.base_url}: {type(exc).__name__}; retrying"

    def close(self) -> None:
        self._client.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch top", description="Live view of a running instance's open streams."
    )
    parser.add_argument(
        "--admin",
        default="http://127.0.0.1:9464",
        help="the instance's admin listener (default http://127.0.0.1:9464)",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the live view until ``q``; exit 2 if Textual is not installed or flags are bad."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.1 <= args.interval <= 60:
        parser.error("--interval must be between 0.1 and 60 seconds")
    try:
        from streamwatch.tools.top_app import TopApp  # noqa: PLC0415 (the optional extra)
    except ImportError:
        sys.stderr.write("streamwatch top needs Textual: pip install 'streamwatch[top]'\n")
        return 2
    poller = Poller(args.admin.rstrip("/"))
    try:
        TopApp(poller, View(), args.interval).run()
    finally:
        poller.close()
    return 0
