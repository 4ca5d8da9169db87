"""The log line's cheaper parts give exactly what structlog and ``round`` give: the timestamp
string, the seconds of a duration, and the line handed to the wrapped logger."""

from __future__ import annotations

import datetime
import logging
from types import SimpleNamespace
from typing import Any, ClassVar

import orjson
import pytest
import structlog
from hypothesis import example, given, settings
from hypothesis import strategies as st
from structlog.testing import CapturingLogger

from streamwatch.export.logs import UtcIsoStamper, log_fields, seconds

#: Instants from 1970 to the last microsecond of year 9999, in nanoseconds since the epoch.
LAST_NS = 253_402_300_799_999_999_999
INSTANTS_NS = st.integers(0, LAST_NS)
WHOLE_SECOND_NS = 1_796_184_000 * 10**9  # 2026-12-02T04:00:00Z


def structlog_stamp(monkeypatch: pytest.MonkeyPatch, ns: int) -> str:
    """structlog's own ``TimeStamper(fmt="iso", utc=True)`` at the instant ``ns`` (floored to the
    microsecond, as ``datetime.now`` floors the clock), its ``datetime.now`` pinned there."""
    at = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        microseconds=ns // 1000
    )

    class Pinned(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Any:
            assert tz is datetime.UTC
            return at

    module = SimpleNamespace(datetime=Pinned, timezone=datetime.timezone)
    with monkeypatch.context() as patch:
        patch.setattr(structlog.processors, "datetime", module)
        stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
        return str(stamper(None, "info", {})["timestamp"])


class TestTimestamp:
    """``UtcIsoStamper`` writes the string structlog's ISO UTC ``TimeStamper`` writes."""

    @settings(max_examples=300, deadline=None)
    @given(instants=st.lists(INSTANTS_NS, min_size=1, max_size=5))
    @example(instants=[WHOLE_SECOND_NS])  # no fraction at a whole second
    @example(instants=[WHOLE_SECOND_NS + 999, WHOLE_SECOND_NS + 1000, WHOLE_SECOND_NS - 1])
    @example(instants=[WHOLE_SECOND_NS + 999_999_999, WHOLE_SECOND_NS + 10**9])
    @example(instants=[WHOLE_SECOND_NS + 10**9 + 5, WHOLE_SECOND_NS + 5])  # the clock went back
    @example(instants=[0, LAST_NS])
    def test_same_string(self, instants: list[int]) -> None:
        """Any instants, one stamper in turn (its cached second changing or not), same strings."""
        clock = iter(instants)
        stamper = UtcIsoStamper(clock=lambda: next(clock))
        with pytest.MonkeyPatch.context() as monkeypatch:
            for ns in instants:
                expected = structlog_stamp(monkeypatch, ns)
                assert stamper(None, "info", {}) == {"timestamp": expected}

    def test_whole_second_has_no_fraction(self) -> None:
        """At a whole second the string ends in seconds and ``Z``, as ``isoformat`` writes it."""
        stamper = UtcIsoStamper(clock=lambda: WHOLE_SECOND_NS + 999)
        assert stamper(None, "info", {})["timestamp"] == "2026-12-02T04:00:00Z"


class TestSeconds:
    """``seconds(ns)`` is ``round(ns / 1e9, 6)``: the same float, so the same JSON number."""

    @settings(max_examples=2000, deadline=None)
    @given(st.integers(-(2**64), 2**64) | st.integers(0, 10**13).map(lambda us: us * 1000 + 500))
    @example(0)
    @example(500)  # a tie: round's own answer on the float
    @example(1_500)
    @example(2_344_679_500)
    @example(-400)  # round gives -0.0, not 0.0
    @example(10**15 - 1)
    @example(10**15)
    @example(86_400 * 10**9 + 499)
    @example(86_400 * 10**9 + 501)
    def test_same_as_round(self, ns: int) -> None:
        expected = round(ns / 1e9, 6)
        got = seconds(ns)
        assert repr(got) == repr(expected)
        assert orjson.dumps(got) == orjson.dumps(expected)

    def test_none(self) -> None:
        """No duration stays None (``null`` on the line)."""
        assert seconds(None) is None


def _render(_: Any, name: str, event_dict: dict[str, Any]) -> str:
    return orjson.dumps({**event_dict, "method": name}).decode()


class TestLogFields:
    """``log_fields`` hands the wrapped logger what ``log.<level>(event, **fields)`` hands it."""

    FIELDS: ClassVar[dict[str, Any]] = {"request_id": "r", "status": 200, "duration_s": 0.5}

    @pytest.mark.parametrize("name", ["info", "warning"])
    def test_same_call(self, name: str) -> None:
        """Same method, same rendered line, same key order; the fields dict is left as it was."""
        processors = [structlog.processors.add_log_level, _render]
        direct, ours = CapturingLogger(), CapturingLogger()
        for wrapped in (direct, ours):
            log = structlog.wrap_logger(
                wrapped,
                processors=processors,
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                context_class=dict,
            )
            if wrapped is direct:
                getattr(log, name)("stream.completed", **self.FIELDS)
            else:
                fields = dict(self.FIELDS)
                log_fields(log.bind(), name, "stream.completed", fields)
                assert fields == self.FIELDS
        assert ours.calls == direct.calls
        assert len(ours.calls) == 1

    def test_below_the_level(self) -> None:
        """A line below the configured level is not written, as the filtering logger's is not."""
        wrapped = CapturingLogger()
        log = structlog.wrap_logger(
            wrapped,
            processors=[_render],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        )
        log_fields(log.bind(), "info", "stream.completed", dict(self.FIELDS))
        assert wrapped.calls == []
